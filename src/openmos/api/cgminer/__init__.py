"""cgminer-compatible TCP API (port 4028): what pyasic, Awesome Miner, Foreman and friends speak.

``protocol`` is the pure wire format (parsing with limits, status rows, codes), ``server`` the TCP server
(framing, deadlines, connection cap) and ``handlers`` the commands answered from one agent.
"""

from openmos.api.cgminer.handlers import CgminerApi
from openmos.api.cgminer.protocol import (
    ACCESS_DENIED,
    BUSY,
    INVALID_COMMAND,
    INVALID_JSON,
    INVALID_PARAMETER,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    TIMEOUT,
    UNSUPPORTED,
    BadRequest,
    Request,
    error_reply,
    parse_request,
)
from openmos.api.cgminer.server import CgminerServer, Responder

__all__ = ["ACCESS_DENIED", "BUSY", "INVALID_COMMAND", "INVALID_JSON", "INVALID_PARAMETER", "MAX_JSON_DEPTH",
           "MAX_REQUEST_BYTES", "TIMEOUT", "UNSUPPORTED", "BadRequest", "CgminerApi", "CgminerServer", "Request",
           "Responder", "error_reply", "parse_request"]
