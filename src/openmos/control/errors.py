"""Errors of the control surface (each edge maps them once: HTTP 409/422, cgminer codes, fleet acks)."""

from __future__ import annotations


class UnsupportedControl(RuntimeError):
    """This device (or its backend) cannot do that, e.g. set voltage on a CPU or curtail a stock miner."""


class InvalidCommand(ValueError):
    """A command from the outside is malformed or out of range; the message says which field and why."""
