"""Wire-level emulator of BM13xx hardware: chains of chips on a pty, and Bitaxe boards behind the bitaxe-raw
USB firmware (control port + data port, EMC2101 and TPS546 on its I2C bus), with fault injection.

Written from the public protocol description (shared/reference/protocols.md, bitaxe-raw's README, the parts'
datasheets) with its own frame parser, encoder and CRCs: it imports nothing from ``openmos.hw`` so a driver
bug cannot mirror itself here. Emulated chips hash real SHA-256d at a reduced rate. May import ``base`` only.
"""
