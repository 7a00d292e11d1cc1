"""``stratum2+tcp://host:port/AUTHORITY_PUBKEY`` (sv2-spec 4.7) and one parser for V1 and V2 pool URLs.

The authority key is mandatory: without it the agent could not tell the real pool from an impostor,
which is the whole point of Stratum V2.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from openmos.stratum.url import MAX_URL, PoolUrl, normal_host
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
        """As strict as ``PoolUrl.parse`` (same host rules), plus the mandatory authority key path."""
        if len(url) > MAX_URL:
            raise ValueError(f"pool URL is longer than {MAX_URL} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise ValueError("pool URL must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValueError("pool URL is malformed (check the brackets around an IPv6 address)") from None
        if parts.scheme.lower() != SCHEME:
            raise ValueError("not a Stratum V2 URL (stratum2+tcp://host:port/AUTHORITY_PUBKEY)")
        if "@" in parts.netloc or parts.query or parts.fragment:
            raise ValueError("Stratum V2 URL must be stratum2+tcp://host:port/AUTHORITY_PUBKEY "
                             "(no user info, query or fragment)")
        if not parts.hostname:
            raise ValueError("pool URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("pool URL has an invalid port") from None
        if port is None or not 0 < port < 65536:
            raise ValueError("pool URL needs a port between 1 and 65535")
        key_text = parts.path.strip("/")
        if not key_text:
            raise ValueError(f"Stratum V2 URL needs the pool's authority public key as its path: "
                             f"{SCHEME}://host:port/AUTHORITY_PUBKEY (the pool publishes it)")
        try:
            key = decode_authority_key(key_text)
        except ValueError as exc:
            raise ValueError(f"Stratum V2 URL has a bad authority key: {exc}") from None
        return cls(normal_host(parts.hostname), port, key)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}://{host}:{self.port}/{encode_authority_key(self.authority_key)}"


def parse_pool_url(url: str) -> PoolUrl | Sv2PoolUrl:
    """A V1 (``stratum+tcp``/``stratum+ssl``) or V2 (``stratum2+tcp``) pool URL; ValueError explains."""
    if url[:len(SCHEME) + 3].lower() == SCHEME + "://":
        return Sv2PoolUrl.parse(url)
    return PoolUrl.parse(url)
