"""Energy management: economics, the site optimiser, power meters and containers over Modbus, OpenADR
demand response and the curtailment fast path.

Owns site-level decisions (which device runs at what power, when). It sees devices only through
``SiteDevice`` (an efficiency curve and a way to set power) and meters through ``PowerMeter``; it never
imports the simulator. Imports ``base`` only (plus pymodbus / openleadr for the wire protocols).
"""
