"""``stratum2+tcp://host:port/AUTHORITY_PUBKEY`` (sv2-spec 4.7) and one parser for V1 and V2 pool URLs.

The authority key is mandatory: without it the agent could not tell the real pool from an impostor,
which is the whole point of Stratum V2.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from openmos.stratum.url import PoolUrl
from openmos.stratum.v2.noise import decode_authority_key, encode_authority_key

SCHEME = "stratum2+tcp"


@dataclass(frozen=True)
class Sv2PoolUrl:
    host: str
    port: int
    authority_key: bytes  # 32-byte x-only key

    tls = False  # the Noise layer encrypts; there is no TLS underneath

    @classmethod
    def parse(cls, url: str) -> Sv2PoolUrl:
        parts = urlsplit(url)
        if parts.scheme != SCHEME:
            raise ValueError(f"not a Stratum V2 URL: {url!r}")
        if not parts.hostname:
            raise ValueError(f"pool URL {url!r} has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"pool URL {url!r} has an invalid port") from None
        if port is None:
            raise ValueError(f"pool URL {url!r} has no port")
        key_text = parts.path.strip("/")
        if not key_text:
            raise ValueError(f"Stratum V2 URL {url!r} needs the pool's authority public key as its path: "
                             f"{SCHEME}://host:port/AUTHORITY_PUBKEY (the pool publishes it)")
        try:
            key = decode_authority_key(key_text)
        except ValueError as exc:
            raise ValueError(f"pool URL {url!r}: bad authority key: {exc}") from None
        return cls(parts.hostname, port, key)

    def __str__(self) -> str:
        return f"{SCHEME}://{self.host}:{self.port}/{encode_authority_key(self.authority_key)}"


def parse_pool_url(url: str) -> PoolUrl | Sv2PoolUrl:
    """A V1 (``stratum+tcp``/``stratum+ssl``) or V2 (``stratum2+tcp``) pool URL; ValueError explains."""
    if url.lower().startswith(SCHEME + "://"):
        return Sv2PoolUrl.parse(url)
    return PoolUrl.parse(url)
