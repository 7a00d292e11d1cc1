"""Pool URLs: ``stratum+tcp://host:port`` and ``stratum+ssl://host:port`` (TLS).

Parsing is strict because a pool URL comes from users, APIs and signed documents alike: the host must be an
IP address or a DNS name made of letters, digits and hyphens; user info, paths, queries and fragments are
refused; ``str()`` gives the one normalised spelling (canonical scheme, lower-case host, IPv6 in brackets).
Error messages never repeat the input.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_SCHEMES = {"stratum+tcp": False, "stratum": False, "tcp": False, "stratum+ssl": True, "stratum+tls": True}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_URL = 512


def normal_host(host: str) -> str:
    """The normalised host (IP literal or DNS name), or ValueError saying what is wrong."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("pool host is not a valid internationalised domain name") from None
    if not name or len(name) > 253:
        raise ValueError("pool host must be an IP address or a DNS name of at most 253 characters")
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError("pool host must be an IP address or a DNS name (letters, digits, hyphens and dots)")
    if labels[-1].isdigit():
        raise ValueError("pool host looks like an IP address but is not a valid one")
    return name


@dataclass(frozen=True)
class PoolUrl:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> PoolUrl:
        if len(url) > MAX_URL:
            raise ValueError(f"pool URL is longer than {MAX_URL} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise ValueError("pool URL must not contain spaces or control characters")
        if "://" not in url:
            raise ValueError("pool URL needs a scheme, e.g. stratum+tcp://pool.example:3333")
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValueError("pool URL is malformed (check the brackets around an IPv6 address)") from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError("unsupported pool URL scheme; use stratum+tcp:// or stratum+ssl://")
        if "@" in parts.netloc:
            raise ValueError("pool URL must not contain user info (user@host); give the worker as the user")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("pool URL must be scheme://host:port with no path, query or fragment")
        if not parts.hostname:
            raise ValueError("pool URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("pool URL has an invalid port") from None
        if port is None:
            raise ValueError("pool URL has no port")
        if not 0 < port < 65536:
            raise ValueError("pool URL port must be between 1 and 65535")
        return cls(normal_host(parts.hostname), port, _SCHEMES[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"stratum+{'ssl' if self.tls else 'tcp'}://{host}:{self.port}"


def normalise_url(url: str) -> str:
    """The normalised spelling of a pool URL (ValueError if it is not one)."""
    return str(PoolUrl.parse(url))
