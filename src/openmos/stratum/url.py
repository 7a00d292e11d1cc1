"""Pool URLs: ``stratum+tcp://host:port`` and ``stratum+ssl://host:port`` (TLS)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

_SCHEMES = {"stratum+tcp": False, "stratum": False, "tcp": False, "stratum+ssl": True, "stratum+tls": True}


@dataclass(frozen=True)
class PoolUrl:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> PoolUrl:
        if "://" not in url:
            raise ValueError(f"pool URL {url!r} needs a scheme, e.g. stratum+tcp://pool.example:3333")
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"unsupported pool URL scheme {parts.scheme!r} in {url!r}; use stratum+tcp:// or stratum+ssl://"
            )
        if not parts.hostname:
            raise ValueError(f"pool URL {url!r} has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"pool URL {url!r} has an invalid port") from None
        if port is None:
            raise ValueError(f"pool URL {url!r} has no port")
        return cls(parts.hostname, port, _SCHEMES[parts.scheme])

    def __str__(self) -> str:
        return f"stratum+{'ssl' if self.tls else 'tcp'}://{self.host}:{self.port}"
