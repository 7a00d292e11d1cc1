"""Simulated devices (modelled): see ``openmos.fleet.simdevice``."""

from openmos.fleet.simdevice import SimulatedFleetDevice

__all__ = ["SimulatedFleetDevice"]
