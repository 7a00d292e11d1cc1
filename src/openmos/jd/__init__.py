"""The Job Declarator Client side of miner-built templates (sv2-spec 6.2, Full-Template mode).

Owns the upstream connections a JDC keeps: to the pool's Job Declarator Server (tokens, declarations,
missing transactions, PushSolution) and to the pool's Mining Protocol endpoint (an extended channel with
work selection, SetCustomMiningJob, shares), and the service that builds templates from the operator's
node under a template policy, with its dashboard (``jd.api``). Imports ``openmos.base``, ``openmos.bitcoin``,
``openmos.stratum``, ``openmos.node``, the local pool's server (``openmos.pool``) for the downstream miners
and ``openmos.api``'s HTTP server settings.
"""

from openmos.jd.client import DeclarationFailed, JdsClient, MiningUpstream

__all__ = ["DeclarationFailed", "JdsClient", "MiningUpstream"]
