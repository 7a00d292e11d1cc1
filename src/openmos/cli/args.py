"""Argument types for the ``mos`` commands: numbers from the command line are checked where they are parsed.

``float("nan")``, ``inf``, negative counts and out-of-range ports are accepted by ``type=float`` / ``type=int``;
unchecked they reached the code as a NaN share difficulty, an OverflowError traceback at bind, a scan that waited
for ever or a simulation that never ended. These types make argparse answer ``invalid ... value`` (exit code 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] (``low_open``: low itself excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text[:20]!r}") from None
        above = value > low if low_open else value >= low
        if not math.isfinite(value) or not above or value > high:
            raise argparse.ArgumentTypeError(f"must be {'more than' if low_open else 'at least'} {low:g} and at "
                                             f"most {high:g}")
        return value

    parse.__name__ = "number"  # argparse names the type in its error message
    return parse


def count(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""

    def parse(text: str) -> int:
        if not text.strip().lstrip("-").isdigit() or len(text) > 12:
            raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value

    parse.__name__ = "count"
    return parse


PORT = count(0, 65535)  # 0: any free port
DURATION = number(0, 10 * 365 * 86400)  # seconds, 0: until Ctrl-C
DIFFICULTY = number(0, 1e18, low_open=True)


def add_miner_port_args(parser: argparse.ArgumentParser, default_port: int) -> None:
    """``--host``, ``--port`` and ``--difficulty`` of a Stratum V1 port miners connect to (``mos pool``,
    ``mos proxy``, ``mos jd``)."""
    parser.add_argument("--host", default="127.0.0.1", help="listen address for miners (default: %(default)s)")
    parser.add_argument("--port", type=PORT, default=default_port,
                        help="Stratum V1 port for miners, 0 = any free port (default: %(default)s)")
    parser.add_argument("--difficulty", type=DIFFICULTY, default=0.001,
                        help="starting share difficulty (default: %(default)s)")
