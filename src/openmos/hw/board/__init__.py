"""Boards that carry BM13xx chains: the Bitaxe family behind the bitaxe-raw USB firmware, and serial chains on
Linux hosts (UART + I2C). Each board turns power, reset, fan and sensors into one ``BoardControl``."""
