"""The ``mos`` command line: the top layer, may import every other layer (each subcommand in its own module)."""
