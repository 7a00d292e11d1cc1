"""The device agent: turns pool jobs into hardware work and hardware nonces into shares.

Owns pool groups with failover and quota split (``PoolManager``), work generation and per-nonce
re-validation (``MiningAgent``), hashrate/share statistics, the agent's configuration, its control surface
(``control.AgentControl``) and the safety monitor that protects hardware with sensors whether or not a tuner
runs (``safety``). There is no fee pool anywhere: every share goes to a pool the user configured. Imports
``base``, ``control``, ``bitcoin``, ``stratum``, ``hw``, ``tuning``, ``security`` and ``maintenance``.
"""

from openmos.miner.agent import AgentStats, FoundShare, MiningAgent
from openmos.miner.config import AgentConfig, PoolEndpoint, PoolGroupConfig
from openmos.miner.pool_manager import PoolConnection, PoolGroup, PoolManager

__all__ = [
    "AgentConfig",
    "AgentStats",
    "FoundShare",
    "MiningAgent",
    "PoolConnection",
    "PoolEndpoint",
    "PoolGroup",
    "PoolGroupConfig",
    "PoolManager",
]
