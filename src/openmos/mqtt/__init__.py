"""MQTT with Home Assistant discovery: each device's readings as sensors, its controls as switch / number /
select / button entities, availability through the broker's last will.

Owns the topic layout (``topics``: pure functions building topics, discovery configs and state documents),
the bridge (``bridge``: one aiomqtt connection publishing any number of devices and turning command messages
into typed commands of the device control surface, with size, rate and role checks) and the adapter for the
OpenMOS agent (``agent``). Imports ``base``, ``control``, ``miner`` (the agent adapter and the config model),
``tuning`` (target presets) and ``api`` (the role rules REST uses), never ``fleet`` or ``cli``. The layout is
documented in docs/mqtt.md.
"""
