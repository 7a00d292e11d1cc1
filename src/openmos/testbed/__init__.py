"""The testbed: every simulated device, site and farm in one place, all on the control surface (modelled).

- ``device``: ``SimulatedFleetDevice``, a light modelled device (fleet tests, rollouts)
- ``site``: ``FleetSimSite`` (one vectorised ``hw.sim.FleetSim`` stepping every miner, each miner a
  ``ControlSurface`` worker), ``SiteMeter`` (a Modbus TCP power meter on the site's modelled power) and
  ``SlotHardware`` (one miner of the site as ``MiningHardware``, so real agents can run on it)
- ``farm``: a LAN of simulated miners answering the cgminer API (``python -m openmos.testbed.farm N``)

The physics (chips, boards, thermals, power, fans) stays in ``openmos.hw.sim``; nothing here reads a
hidden parameter except through the simulator's own interfaces. Imports ``base``, ``control``, ``bitcoin``,
``stratum``, ``hw``, ``tuning``, ``security``, ``miner``, ``api``, ``fleet`` and ``energy``.
"""
