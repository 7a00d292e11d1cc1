"""Stock pyasic (no class from this project) finds an OpenMOS device and reads it correctly.

pyasic probes port 4028 (and 80/443) of an address, so the device's cgminer API listens on 4028 of its own
loopback address. OpenMOS answers the LuxOS dialect of the cgminer API (documented by Luxor; pyasic reads it
over 4028 alone, power included), so pyasic picks its LuxOS backend; the firmware it reports is OpenMOS.
"""

from __future__ import annotations

import random
import socket

import pyasic
import pytest

from api_stack import running_device
from helpers import wait_for


def loopback_with_4028_free() -> str:
    rng = random.Random()
    for _ in range(50):
        ip = f"127.{rng.randrange(200, 255)}.{rng.randrange(0, 255)}.{rng.randrange(1, 255)}"
        with socket.socket() as s:
            try:
                s.bind((ip, 4028))
            except OSError:
                continue
            return ip
    pytest.skip("no loopback address with port 4028 free")


async def test_stock_pyasic_detects_an_openmos_device_and_reads_it() -> None:
    ip = loopback_with_4028_free()
    async with running_device(allow=["127.0.0.1/32"], performance={"power_w": 3000}, cgminer_host=ip,
                              cgminer_port=4028) as dev:
        await wait_for(lambda: dev.agent.pools.groups[0].connections[0].counters.accepted >= 1, 60, "a share")
        miner = await pyasic.get_miner(ip)
        assert miner is not None
        assert type(miner).__module__.startswith("pyasic.")  # stock pyasic, not a class of ours
        assert type(miner).__name__ == "LUXMinerS21"  # LuxOS dialect, Antminer S21 hardware
        data = await miner.get_data()
        view = dev.apis.view
        boards = view.boards()
        # Boards: all three, full chip count, per-board hashrate, board and chip temperatures.
        assert len(data.hashboards) == 3 and all(not b.missing for b in data.hashboards)
        for theirs, ours in zip(data.hashboards, boards, strict=True):
            assert theirs.chips == 108
            assert theirs.hashrate is not None and float(theirs.hashrate) == pytest.approx(ours.hashrate_ths, rel=0.2)
            assert theirs.temp == pytest.approx(max(ours.temperatures_c), abs=3)
            assert theirs.chip_temp == pytest.approx(max(ours.chip_temperatures_c), abs=3)
        # Totals: hashrate (TH/s, modelled) and power agree with the device's own reading.
        assert data.hashrate is not None
        assert float(data.hashrate) == pytest.approx(view.hashrate(60) / 1e12, rel=0.2)
        assert 150 < float(data.hashrate) < 260
        assert data.wattage is not None and view.power_w is not None
        assert data.wattage == pytest.approx(view.power_w, rel=0.15)
        assert data.wattage_limit == 3000
        # Fans, pools, firmware.
        rpms = [rpm for _, rpm, _ in view.fans()]
        assert len(data.fans) == 4 and all(f.speed for f in data.fans)
        assert [f.speed for f in data.fans] == pytest.approx(rpms, rel=0.2)
        pool = data.pools[0]
        assert pool.user == "api.s21" and pool.active and pool.alive and pool.accepted is not None
        assert pool.accepted >= 1 and pool.url is not None and str(pool.url.port) in dev.pool.url
        assert data.fw_ver is not None and data.fw_ver.startswith("OpenMOS")
        # Controls through stock pyasic: LuxOS sessions, only for allow-listed hosts (loopback connections come
        # from 127.0.0.1). A power limit picks the highest preset at or under it: "balanced" = 85 % of 3,500 W.
        assert await miner.set_power_limit(2990)
        assert dev.agent.tuner is not None and dev.agent.tuner.base_target.value == 2975
        assert await miner.stop_mining()
        assert view.control.state.value == "sleeping"
        assert await miner.resume_mining()
        assert view.control.state.value == "mining"
        # The fault light is the device's locate; restarting the backend restarts its pool connections.
        assert await miner.fault_light_on()
        assert view.status().locate
        assert await miner.fault_light_off()
        assert not view.status().locate
        assert await miner.restart_backend()


async def test_stock_pyasic_controls_are_refused_outside_the_allow_list() -> None:
    ip = loopback_with_4028_free()
    async with running_device(cgminer_host=ip, cgminer_port=4028) as dev:
        miner = await pyasic.get_miner(ip)
        assert miner is not None
        try:
            stopped = await miner.stop_mining()
        except TypeError:  # pyasic 0.79 crashes when logon is refused (it joins a None session id)
            stopped = False
        assert not stopped and not dev.agent.paused  # no session for a host outside the allow list
