"""Pool URLs, hosts and IP addresses in one normalised spelling: what the APIs store, what the pool-state
enforcement compares and what the scanner matches against the declared endpoints.

Parsing is strict because a pool URL comes from users, APIs and signed documents alike: the host must be an
IP address or a DNS name made of letters, digits and hyphens; user info, queries and fragments are refused.
The normal form has the canonical scheme (``stratum+tcp``, ``stratum+ssl``, ``stratum2+tcp``), a lower-case
host without a trailing dot, IPv4-mapped IPv6 folded to IPv4, IPv6 in brackets, the port as a plain number and
no trailing slash. Error messages never repeat the input.

Stratum V1: ``stratum+tcp://host:port`` and ``stratum+ssl://host:port`` (TLS). Stratum V2 URLs
(``stratum2+tcp://host:port/AUTHORITY_KEY``) share the host and port rules; their key is checked by
``openmos.stratum.v2.url`` (the key path is kept verbatim here).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

V1_SCHEMES = {"stratum+tcp": False, "stratum": False, "tcp": False, "stratum+ssl": True, "stratum+tls": True}
SV2_SCHEME = "stratum2+tcp"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_URL = 512

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def normal_ip(text: str) -> IpAddress | None:
    """The address of an IP literal (brackets and an IPv6 zone dropped, IPv4-mapped IPv6 such as
    ``::ffff:10.0.0.5`` folded to IPv4); None when ``text`` is not an IP address."""
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def normal_host(host: str) -> str:
    """The normalised host (IP literal or DNS name), or ValueError saying what is wrong."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    addr = normal_ip(text) if "%" not in text else None
    if addr is not None:
        return str(addr)
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


def bracketed(host: str) -> str:
    """A host as it appears in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class UrlParts:
    """scheme://host:port/path, every part checked and normalised (path without slashes)."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def split(cls, url: str, schemes: Collection[str]) -> UrlParts:
        """Shared checks of every pool URL; ValueError says what is wrong (never repeating the input)."""
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
        if scheme not in schemes:
            raise ValueError("unsupported pool URL scheme; use stratum+tcp:// or stratum+ssl://")
        if "@" in parts.netloc:
            raise ValueError("pool URL must not contain user info (user@host); give the worker as the user")
        if parts.query or parts.fragment:
            raise ValueError("pool URL must not have a query or fragment")
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
        return cls(scheme, normal_host(parts.hostname), port, parts.path.strip("/"))


@dataclass(frozen=True)
class PoolUrl:
    """A Stratum V1 pool: ``str()`` is its normalised spelling."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> PoolUrl:
        parts = UrlParts.split(url, V1_SCHEMES.keys())
        if parts.path:
            raise ValueError("pool URL must be scheme://host:port with no path, query or fragment")
        return cls(parts.host, parts.port, V1_SCHEMES[parts.scheme])

    def __str__(self) -> str:
        return f"stratum+{'ssl' if self.tls else 'tcp'}://{bracketed(self.host)}:{self.port}"


def normalise_url(url: str) -> str:
    """The normalised spelling of a V1 or V2 pool URL (ValueError if it is not one). Two spellings of one
    pool (case, trailing dot or slash, ``stratum://`` vs ``stratum+tcp://``, ``[::ffff:a.b.c.d]``) give the
    same string; anything else gives another."""
    if url[:len(SV2_SCHEME) + 3].lower() == SV2_SCHEME + "://":
        parts = UrlParts.split(url, {SV2_SCHEME})
        if not parts.path or "/" in parts.path:
            raise ValueError(f"Stratum V2 URL must be {SV2_SCHEME}://host:port/AUTHORITY_PUBKEY")
        return f"{SV2_SCHEME}://{bracketed(parts.host)}:{parts.port}/{parts.path}"
    return str(PoolUrl.parse(url))


def split_endpoint(entry: str) -> tuple[str, int | None]:
    """A declared endpoint or a URL -> (normalised host or "", port or None).

    Accepts ``host``, ``host:port``, ``[v6]:port``, ``v6``, ``:port`` and any ``scheme://host[:port][/...]``
    (a pool URL as a stock miner config spells it). ValueError for a bad host or port."""
    text = entry.strip()
    if "://" in text:
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise ValueError("endpoint URL is malformed") from None
        if "@" in parts.netloc:
            raise ValueError("endpoint URL must not contain user info")
        if not parts.hostname:
            raise ValueError("endpoint URL has no host")
        return normal_host(parts.hostname), port
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not (rest.startswith(":") and rest[1:].isdigit()):
                raise ValueError("endpoint port must be a number")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        if not number.isdigit():
            raise ValueError("endpoint port must be a number")
        port = int(number)
    if port is not None and not 0 < port < 65536:
        raise ValueError("endpoint port must be between 1 and 65535")
    return (normal_host(host) if host else ""), port
