"""The built-in local Stratum V1 pool (``mos pool``).

Owns a regtest-like template chain generated locally (no network), per-session vardiff, extranonce
allocation and session resumption, BIP310 version rolling, independent share validation, per-worker
statistics and block detection. It is the embedded default pool for the demo and the tests and accepts
any Stratum V1 miner. ``v1_session`` is the Stratum V1 server side the farm proxy shares; ``sv2_listener`` the
encrypted listener of the JDS and the template provider. Imports ``openmos.base``, ``openmos.bitcoin``,
``openmos.stratum`` and ``openmos.node``.
"""

from openmos.pool.chain import BlockTemplate, TemplateChain
from openmos.pool.server import AcceptedShare, LocalPool, PoolSettings
from openmos.pool.vardiff import VardiffSettings

__all__ = ["AcceptedShare", "BlockTemplate", "LocalPool", "PoolSettings", "TemplateChain", "VardiffSettings"]
