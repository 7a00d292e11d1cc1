"""``stratum2+tcp://host:port/AUTHORITY_PUBKEY`` (sv2-spec 4.7) and one parser for V1 and V2 pool URLs.

The authority key is mandatory: without it the agent could not tell the real pool from an impostor,
which is the whole point of Stratum V2.
"""

from __future__ import annotations

from dataclasses import dataclass

from openmos.base.url import SV2_SCHEME, PoolUrl, UrlParts, bracketed
from openmos.stratum.v2.noise import decode_authority_key, encode_authority_key

SCHEME = SV2_SCHEME


@dataclass(frozen=True)
class Sv2PoolUrl:
    host: str
    port: int
    authority_key: bytes  # 32-byte x-only key

    tls = False  # the Noise layer encrypts; there is no TLS underneath

    @classmethod
    def parse(cls, url: str) -> Sv2PoolUrl:
        """As strict as ``PoolUrl.parse`` (same host rules), plus the mandatory authority key path."""
        if url[:len(SCHEME) + 3].lower() != SCHEME + "://":
            raise ValueError("not a Stratum V2 URL (stratum2+tcp://host:port/AUTHORITY_PUBKEY)")
        parts = UrlParts.split(url, {SCHEME})
        if not parts.path:
            raise ValueError(f"Stratum V2 URL needs the pool's authority public key as its path: "
                             f"{SCHEME}://host:port/AUTHORITY_PUBKEY (the pool publishes it)")
        try:
            key = decode_authority_key(parts.path)
        except ValueError as exc:
            raise ValueError(f"Stratum V2 URL has a bad authority key: {exc}") from None
        return cls(parts.host, parts.port, key)

    def __str__(self) -> str:
        return f"{SCHEME}://{bracketed(self.host)}:{self.port}/{encode_authority_key(self.authority_key)}"


def parse_pool_url(url: str) -> PoolUrl | Sv2PoolUrl:
    """A V1 (``stratum+tcp``/``stratum+ssl``) or V2 (``stratum2+tcp``) pool URL; ValueError explains."""
    if url[:len(SCHEME) + 3].lower() == SCHEME + "://":
        return Sv2PoolUrl.parse(url)
    return PoolUrl.parse(url)
