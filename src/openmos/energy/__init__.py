"""Energy management: economics, the site optimiser, power meters and containers over Modbus, OpenADR
demand response, the curtailment fast path and the energy service that runs them all (``mos energy run``).

Owns site-level decisions (which device runs at what power, when). It sees devices only through a
``SiteLink`` (members with their tuner-measured efficiency curves, and typed ``Curtail`` commands of the
control surface) and meters through ``PowerMeter``; it never imports the simulator or the fleet. Imports
``base`` and ``control`` (plus pymodbus / openleadr for the wire protocols).
"""
