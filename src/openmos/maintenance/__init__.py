"""Predictive maintenance: health features from telemetry and an explainable model that flags chips, boards,
voltage regulators, fans and PSUs likely to fail, each with its reason (feature, how far out of band) and an
estimated lead time; plus the plain threshold rule fleet tools alert on today, as the baseline.

Decides only on what a real deployment reads (counters, sensors, PSU/regulator readings), never on a
simulator's hidden state. Vectorised over miners so one model serves a device (one miner) and a simulated
fleet (benchmarks/maintenance.py). May import ``base``, ``control`` and ``hw`` (telemetry types only).
"""

from openmos.maintenance.model import Finding, HealthModel, Thresholds
from openmos.maintenance.monitor import MaintenanceMonitor
from openmos.maintenance.snapshot import Snapshot

__all__ = ["Finding", "HealthModel", "MaintenanceMonitor", "Snapshot", "Thresholds"]
