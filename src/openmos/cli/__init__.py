"""The ``mos`` command line: the top layer, may import everything below it."""
