"""Pool configuration as signed desired state: a device edit (by malware or by hand) is detected and undone."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from openmos.base.files import atomic_write
from openmos.base.url import normalise_url
from openmos.security.signing import verify_document

log = logging.getLogger(__name__)


def pool_key(url: Any) -> str:
    """The URL in its one normalised spelling (``openmos.base.url``), so that two spellings of the same pool
    compare equal and nothing else does; a URL that does not parse is kept as it is (and so never equals a
    valid desired one)."""
    try:
        return normalise_url(str(url))
    except ValueError:
        return str(url)


def pool_state(config_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The security-relevant part of an agent config: every group's pools (normalised url, user) and quotas."""
    return [{"name": g.get("name", "default"), "quota": g.get("quota", 1),
             "pools": [{"url": pool_key(p["url"]), "user": p["user"]} for p in g.get("pools", [])]}
            for g in config_doc.get("groups", [])]


def enforce_pools(config_path: Path, desired_envelope: dict[str, Any], public_pem: bytes) -> str | None:
    """Compare the device config's pools with the signed desired state; restore them if they differ.

    Returns a description of what was restored, or None when the config already matched.
    """
    desired = verify_document(desired_envelope, public_pem)
    wanted = pool_state(desired)
    doc = tomllib.loads(config_path.read_text())
    current = pool_state(doc)
    if current == wanted:
        return None
    passwords = {(pool_key(p["url"]), p["user"]): p.get("password", "x") for g in doc.get("groups", [])
                 for p in g["pools"]}
    doc["groups"] = [{"name": g["name"], "quota": g["quota"],
                      "pools": [{"url": p["url"], "user": p["user"],
                                 "password": passwords.get((p["url"], p["user"]), "x")} for p in g["pools"]]}
                     for g in wanted]
    atomic_write(config_path, tomli_w.dumps(doc).encode())
    found = sorted({p["url"] + " " + p["user"] for g in current for p in g["pools"]}
                   - {p["url"] + " " + p["user"] for g in wanted for p in g["pools"]})
    message = f"pool configuration differed from the signed desired state and was restored (removed: {found})"
    log.warning(message)
    return message
