"""Address allow lists (``W:10.0.0.5/32`` style), shared by config validation and the APIs; free ports and the
open-files limit of processes that hold many sockets."""

from __future__ import annotations

import ipaddress
import resource
import socket
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_PREFIX_V4 = 24
MIN_PREFIX_V6 = 120


@dataclass(frozen=True)
class AllowList:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: list[str]) -> AllowList:
        """Parse entries. Anything wider than a /24 (IPv6: /120) is refused like a wildcard: privileged access
        is for named management hosts, and ``0.0.0.0/1`` + ``128.0.0.0/1`` is a wildcard in two halves."""
        nets: list[Network] = []
        for number, entry in enumerate(entries, 1):
            text = entry.removeprefix("W:").strip()
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"allow entry {number} is not an address or network (W:ip or W:ip/prefix)") from None
            narrowest = MIN_PREFIX_V4 if net.version == 4 else MIN_PREFIX_V6
            if net.prefixlen < narrowest:
                raise ValueError(f"allow entry {number} ({net}) is wider than /{narrowest} and would grant a whole "
                                 "network privileged access; list the management hosts instead")
            nets.append(net)
        return cls(tuple(nets))

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for servers that need the number before binding)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft limit of open files to ``wanted`` (at most the hard limit, never lower it), for a
    process holding thousands of sockets; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new
