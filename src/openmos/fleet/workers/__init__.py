"""Device workers: one folder per kind of device, each an implementation of the control surface
(``openmos.control.DeviceControl``) put on the bus by ``edge.BusEdge`` (the ``fleet.node.DeviceAdapter``
dictionaries), like Home Assistant integrations.

- ``openmos``: an OpenMOS agent in this process, native on the fleet bus
- ``pyasic``: third-party miners (stock Antminer, Whatsminer, Braiins OS, LuxOS, Vnish, Bitaxe ...) via pyasic

Simulated devices (modelled) implement the same surface in ``openmos.testbed``.
"""
