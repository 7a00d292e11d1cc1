"""Key expressions of the fleet bus. Every name is ``openmos/<site>/...``; ``*`` matches one chunk and
``**`` any number, so ``openmos/*/dev/*/telemetry`` is every device's telemetry at every site."""

from __future__ import annotations

import re

ROOT = "openmos"
_CHUNK = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check(*chunks: str) -> None:
    for chunk in chunks:
        if chunk not in ("*", "**") and not _CHUNK.match(chunk):
            raise ValueError(f"invalid key chunk {chunk!r}: use letters, digits, '_', '.', '-' (max 64)")


def site_chunk(site: str) -> str:
    """``site`` if it names one site (no wildcard), ValueError else."""
    if site in ("*", "**"):
        raise ValueError("a site, not a wildcard")
    _check(site)
    return site


def telemetry(site: str, device: str) -> str:
    """Published by a device node every interval: status JSON (hashrate, power, temperatures, pools), signed
    when produced. Also a queryable: a poll is answered with the last signed snapshot (no signature per poll)."""
    _check(site, device)
    return f"{ROOT}/{site}/dev/{device}/telemetry"


def events(site: str, device: str) -> str:
    """Published on change: alerts, state transitions, security findings."""
    _check(site, device)
    return f"{ROOT}/{site}/dev/{device}/events"


def inventory(site: str, device: str) -> str:
    """Queryable: identity and hardware (model, serial, MAC, firmware, boards, location tags)."""
    _check(site, device)
    return f"{ROOT}/{site}/dev/{device}/inventory"


def status(site: str, device: str) -> str:
    """Queryable: the same status document as telemetry, signed for this very query (its nonce inside)."""
    _check(site, device)
    return f"{ROOT}/{site}/dev/{device}/status"


def command(site: str, device: str, action: str) -> str:
    """Queryable: run ``action`` (JSON parameters in the query payload), reply with the result."""
    _check(site, device, action)
    return f"{ROOT}/{site}/dev/{device}/cmd/{action}"


def enroll(site: str, device: str) -> str:
    """Queryable (controller): a device's signed enrollment request; the reply says enrolled/pending/refused."""
    _check(site, device)
    return f"{ROOT}/{site}/enroll/{device}"


def device_ref(site: str, device: str) -> str:
    """``site/device``: how a device is named outside the bus (REST, dashboard, results, alerts). A device id
    is only unique within its site, so everything above the bus keys devices by both."""
    return f"{site}/{device}"


def split_ref(ref: str) -> tuple[str, str]:
    """(site, device) of a ``site/device`` reference; ValueError for anything else."""
    site, slash, device = ref.partition("/")
    if not slash:
        raise ValueError(f"name a device as SITE/DEVICE, not {ref!r}")
    _check(site, device)
    if site in ("*", "**") or device in ("*", "**"):
        raise ValueError(f"name one device as SITE/DEVICE, not {ref!r}")
    return site, device


def parse_device_key(key: str) -> tuple[str, str, str]:
    """(site, device, leaf) of a device key expression."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != ROOT or parts[2] != "dev":
        raise ValueError(f"not a device key: {key!r}")
    return parts[1], parts[3], "/".join(parts[4:])


def host_events(site: str, host: str) -> str:
    """Published by a process hosting several devices: a batch of its devices' events (acknowledgements), each
    still signed by its own device; the controller believes each one only from that device's enrolled key."""
    _check(site, host)
    return f"{ROOT}/{site}/host/{host}/events"


def site_curtail(site: str) -> str:
    """Publication: a signed "run at this fraction now" for every device of the site (the fast path)."""
    _check(site)
    return f"{ROOT}/{site}/site/curtail"
