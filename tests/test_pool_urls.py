"""One pool-URL normaliser (``openmos.base.url``) for the APIs, the signed pool state and the scanner.

Attacks: spellings of the declared pool that must still count as it (case, trailing dot and slash, scheme
variants, IPv4-mapped IPv6, a zero-padded port), and look-alikes that must not (a longer name, a neighbour
address, another port, user info hiding the real host, a mapped foreign address)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import tomli_w

from openmos.base.url import normalise_url, split_endpoint
from openmos.miner.config import AgentConfig
from openmos.security.pools import enforce_pools
from openmos.security.scanner import Scanner
from openmos.security.signing import generate_keypair, sign_document

POOL = "stratum+tcp://10.0.0.5:3333"
SAME = ["STRATUM+TCP://10.0.0.5:3333", "stratum+tcp://10.0.0.5:3333/", "stratum://10.0.0.5:3333",
        "tcp://10.0.0.5:3333", "stratum+tcp://[::ffff:10.0.0.5]:3333", "stratum+tcp://[::FFFF:a00:5]:3333/",
        "stratum+tcp://10.0.0.5:03333"]
OTHER = ["stratum+tcp://10.0.0.50:3333", "stratum+tcp://10.0.0.5:3334", "stratum+ssl://10.0.0.5:3333",
         "stratum+tcp://[::ffff:203.0.113.66]:3333", "stratum+tcp://10.0.0.5.evil.example:3333",
         "stratum+tcp://10.0.0.5:3333@203.0.113.66:3333", "stratum+tcp://10.0.0.5%2e:3333"]
NAMED = "stratum+tcp://pool.example:3333"
NAMED_SAME = ["stratum+tcp://POOL.Example.:3333", "Stratum+TCP://pool.example.:3333/", "stratum://pool.example:3333"]


def test_one_spelling_per_pool() -> None:
    for url in SAME:
        assert normalise_url(url) == POOL, url
    for url in NAMED_SAME:
        assert normalise_url(url) == NAMED, url
    for url in OTHER:
        with contextlib.suppress(ValueError):  # refused outright is fine too
            assert normalise_url(url) != POOL, url
    assert split_endpoint("[::ffff:10.0.0.5]:3333") == ("10.0.0.5", 3333)
    assert split_endpoint("POOL.example.") == ("pool.example", None) and split_endpoint(":3333") == ("", 3333)
    for bad in ("pool.example:99999", "pool.example:x", "bad_host:1", "[::1]x"):
        with pytest.raises(ValueError):
            split_endpoint(bad)
    # The API stores what the scanner and the pool state compare.
    config = AgentConfig.from_dict({"groups": [{"pools": [{"url": "stratum://[::ffff:10.0.0.5]:3333/", "user": "u"}]}]})
    assert config.groups[0].pools[0].url == POOL


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "k.pem", d / "k.pub")
    return (d / "k.pem").read_bytes(), (d / "k.pub").read_bytes()


def test_signed_pool_state_is_not_fooled_by_spelling(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    desired = sign_document({"groups": [{"name": "main", "quota": 1, "pools": [{"url": POOL, "user": "me.rig1"}]}]},
                            keys[0])
    config = tmp_path / "agent.toml"
    for url in SAME:  # the same pool spelt otherwise: nothing to restore, the file is left alone
        text = tomli_w.dumps({"groups": [{"name": "main", "quota": 1, "pools": [
            {"url": url, "user": "me.rig1", "password": "secret"}]}]})
        config.write_text(text)
        assert enforce_pools(config, desired, keys[1]) is None, url
        assert config.read_text() == text
    for url in OTHER:  # a look-alike is a foreign pool: restored to the signed one, password kept only if same
        config.write_text(tomli_w.dumps({"groups": [{"name": "main", "quota": 1, "pools": [
            {"url": url, "user": "me.rig1", "password": "secret"}]}]}))
        assert enforce_pools(config, desired, keys[1]) is not None, url
        restored = config.read_text()
        assert POOL in restored and url not in restored, url


def test_scanner_declared_endpoints_are_not_fooled_by_spelling(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "config").mkdir(parents=True)
    declared = {"10.0.0.5:3333", "POOL.Example.:3333"}

    def findings(url: str) -> list[str]:
        (root / "config/cgminer.conf").write_text(json.dumps({"pools": [{"url": url, "user": "me.rig1"}]}))
        return [f.detail for f in Scanner(root, None, declared).scan().by_check("pool-config")]

    for url in [*SAME, *NAMED_SAME, "10.0.0.5:3333", "pool.example.:3333"]:
        assert findings(url) == [], url
    endpoints_elsewhere = [u for u in OTHER if not u.startswith("stratum+ssl")]  # TLS to 10.0.0.5:3333 is declared
    for url in [*endpoints_elsewhere, "stratum+tcp://pool.example:3334", "stratum+tcp://pool.example.evil.example:3333"]:
        found = findings(url)
        assert len(found) == 1 and ("foreign pool" in found[0] or "malformed" in found[0]), (url, found)
    with pytest.raises(ValueError, match="declared endpoint"):
        Scanner(root, None, {"pool.example:port"})
