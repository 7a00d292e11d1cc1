"""Stratum V2: binary codec, Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256 transport, device client.

Owns the SV2 data types and every Common and Mining sub-protocol message (``messages``), the Job
Declaration (``job_declaration``) and Template Distribution (``template_distribution``) messages, frame headers
and size limits (``framing``), the Noise handshake, pool certificates and the encrypted transport
(``noise``, ``transport``), ``stratum2+tcp://host:port/AUTHORITY_PUBKEY`` URLs (``url``) and the
header-only device client (``client``). Like the rest of ``openmos.stratum`` it imports
``openmos.bitcoin`` (and the V1 job/share model) only. Written from the sv2-spec text.
"""

from openmos.stratum.v2 import job_declaration, template_distribution  # registers their messages
from openmos.stratum.v2.codec import Sv2CodecError
from openmos.stratum.v2.framing import MAX_PAYLOAD, Frame
from openmos.stratum.v2.url import Sv2PoolUrl, parse_pool_url

__all__ = ["MAX_PAYLOAD", "Frame", "Sv2CodecError", "Sv2PoolUrl", "job_declaration", "parse_pool_url",
           "template_distribution"]
