"""``mos proxy``: a farm proxy from Stratum V1 miners to one encrypted Stratum V2 extended channel.

Owns the upstream extended-channel session with failover across V2 pools (``upstream``), the V1 listener
that splits the upstream extranonce space among downstream miners, validates every share itself before
forwarding it, keeps per-downstream vardiff and statistics (``server``), and their exposition
(``api``: cgminer API, REST and Prometheus, on the device API's own cgminer server). Imports ``openmos.base``
(the listener lifecycle), ``openmos.bitcoin``, ``openmos.stratum`` (V1 wire helpers, V2 codec and transport),
``openmos.pool`` (the shared V1 server side, vardiff) and ``openmos.api`` (the cgminer wire format and servers)
only; only the CLI imports it.
"""

from openmos.proxy.server import DownstreamStats, FarmProxy, ProxySettings

__all__ = ["DownstreamStats", "FarmProxy", "ProxySettings"]
