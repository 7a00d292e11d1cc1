"""Fleet control plane (work in progress): the peer-to-peer bus (eclipse-zenoh), device nodes, fast
polling of device APIs, bulk actions with approvals, staged rollouts.

Top layer beside ``api``: imports ``miner``, ``api`` views, ``security``, ``energy`` (``FleetLink``, the
energy layer's way onto the bus), ``tuning``, ``hw``, ``control`` and ``base``, never the reverse.
The key-expression schema in ``keys`` is the public, vendor-neutral API of the fleet (docs/fleet-keys.md).
"""
