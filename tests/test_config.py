"""Agent configuration: clear errors for bad files, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openmos.base import atomic_write
from openmos.miner.config import AgentConfig, ConfigError

GOOD = """
hardware = "cpu:2"
[[groups]]
name = "main"
quota = 3
[[groups.pools]]
url = "stratum+tcp://127.0.0.1:3333"
user = "me.rig1"
[[groups.pools]]
url = "stratum+ssl://127.0.0.1:4443"
user = "me.rig1"
"""


def test_load_good(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    config = AgentConfig.load(path)
    assert config.hardware == "cpu:2"
    assert [p.url for p in config.groups[0].pools][1].startswith("stratum+ssl")
    assert config.groups[0].quota == 3


@pytest.mark.parametrize(("text", "why"), [
    ("hardware = ", "not valid TOML"),
    ("hardware = 'cpu'", "groups: Field required"),
    ("[[groups]]\npools = []", "groups.0.pools: List should have at least 1 item"),
    (GOOD.replace("stratum+tcp://127.0.0.1:3333", "http://x:1"), "unsupported pool URL scheme"),
    (GOOD.replace("quota = 3", "quota = 0"), "groups.0.quota"),
    (GOOD + "\nsurprise = 1", "surprise: Extra inputs are not permitted"),
    (GOOD.replace('user = "me.rig1"', 'user = "a\\nb"', 1), "line breaks"),
    # TOML has inf and nan: bounds like gt=0 alone let inf through (an inf power target stopped the agent)
    (GOOD + "\n[performance]\npower_w = inf", "performance.power_w: Input should be a finite number"),
    (GOOD + "\n[performance]\nhashrate_ths = 1e300", "performance.hashrate_ths: Input should be less than"),
    (GOOD + "\n[performance]\nmanual_fan_pct = nan", "performance.manual_fan_pct: Input should be a finite"),
    (GOOD + "\n[stratum]\nstall_timeout_s = -inf", "stratum.stall_timeout_s: Input should be a finite"),
    # an operator may save the hardware over REST: cpu:100000 started 100,000 processes at the next restart
    (GOOD.replace('"cpu:2"', '"cpu:100000"'), "hardware: Value error, cpu:N needs N from 1 to"),
    (GOOD.replace('"cpu:2"', '"cpu:' + "9" * 5000 + '"'), "hardware: Value error, cpu:N needs N from 1 to"),
    (GOOD.replace('"cpu:2"', '"cpu:0"'), "hardware: Value error, cpu:N needs N from 1 to"),
    (GOOD.replace('"cpu:2"', '"sim:s99"'), "hardware: Value error, unknown miner model 's99'"),
    # the liveness probe is sent every few seconds: mining.subscribe there made pools hand out a new extranonce1
    (GOOD + '\n[stratum]\nstall_probe_method = "mining.subscribe"', "stall_probe_method: Value error, mining.subscr"),
    (GOOD + '\n[stratum]\nstall_probe_method = "mining.authorize"', "changes the pool session"),
])
def test_bad_configs_explain_themselves(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why) as info:
        AgentConfig.load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        AgentConfig.load(tmp_path / "nope.toml")


def test_save_roundtrip_is_atomic(tmp_path: Path) -> None:
    src = tmp_path / "a.toml"
    src.write_text(GOOD)
    config = AgentConfig.load(src)
    dest = tmp_path / "sub" / "saved.toml"
    config.save(dest)
    assert AgentConfig.load(dest) == config
    assert [p.name for p in dest.parent.iterdir()] == ["saved.toml"]  # no temp files left behind


def test_atomic_write_keeps_old_file_when_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("old")

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]
