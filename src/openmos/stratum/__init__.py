"""Stratum V1: wire format, job model and the asyncio client.

Owns JSON-RPC line framing (with a line-length cap), message validation with clear errors, the
``StratumJob`` model (how a job becomes a header), checks on pool difficulties and ``StratumClient``.
Imports ``openmos.bitcoin`` and ``openmos.base`` only.
"""

from openmos.stratum.job import Share, StratumJob
from openmos.stratum.protocol import (
    MAX_LINE_BYTES,
    Notification,
    ProtocolError,
    Request,
    Response,
    StratumErrorCode,
    parse_message,
)
from openmos.stratum.url import PoolUrl

__all__ = [
    "MAX_LINE_BYTES",
    "Notification",
    "PoolUrl",
    "ProtocolError",
    "Request",
    "Response",
    "Share",
    "StratumErrorCode",
    "StratumJob",
    "parse_message",
]
