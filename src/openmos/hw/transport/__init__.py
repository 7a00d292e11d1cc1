"""Byte transports to hashing hardware: serial ports (pyserial, asyncio) and the bitaxe-raw control protocol."""
