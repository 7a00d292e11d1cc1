"""The BM13xx driver against the independent wire-level emulator, over ptys."""

from __future__ import annotations

import ast
import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from openmos.bitcoin import BlockHeader, difficulty_to_target
from openmos.emulator.devices import EmulatedBitaxe, EmulatedSerialChain
from openmos.hw.bm13xx.backend import Bm13xxHardware
from openmos.hw.bm13xx.chain import ChainError
from openmos.hw.bm13xx.protocol import REG_ERROR_COUNT
from openmos.hw.factory import create_hardware
from openmos.hw.transport.serial import DeviceNotFound
from openmos.hw.work import NonceResult, WorkItem
from openmos.miner import AgentConfig, MiningAgent
from openmos.pool import LocalPool

from helpers import easy_pool_settings, wait_for

SHIFT = 20  # the emulator's chips treat difficulty 1 as 2**-20 so Python-speed SHA-256d finds nonces
FAST = f"diff1_shift={SHIFT}&ticket=4&ramp_step=0.005&job_interval=1"
# A register read-back checks what the chips hold, not how fast they answer: a loaded machine can take seconds.
READ_BACK_S = 30.0


class Provider:
    generation = 0

    def __init__(self, target_difficulty: float = 2.0 ** -SHIFT) -> None:
        self.n = 0
        self.target = difficulty_to_target(target_difficulty)

    def next_work(self) -> WorkItem:
        self.n += 1
        header = BlockHeader(0x20000000, bytes(range(32)), bytes(range(32, 64)), 1_700_000_000 + self.n,
                             0x1D00FFFF, 0)
        return WorkItem(self.n, 0, header, 0x1FFFE000, self.target)


def bitaxe_hw(ports: tuple[str, str], extra: str = "") -> Bm13xxHardware:
    hw = create_hardware(f"bitaxe:{ports[0]},{ports[1]}?{FAST}{extra}")
    assert isinstance(hw, Bm13xxHardware)
    return hw


@asynccontextmanager
async def serial_chain(model: str, chips: int, query: str, hashrate: float = 20_000.0
                       ) -> AsyncIterator[tuple[EmulatedSerialChain, Bm13xxHardware]]:
    """An emulated serial chain of ``chips`` ``model`` chips and the driver on its pty (``bm13xx:PTY?query&FAST``);
    both stopped on the way out."""
    emu = EmulatedSerialChain(model, chips, hashrate=hashrate, diff1_shift=SHIFT)
    path = await emu.start()
    hw = create_hardware(f"bm13xx:{path}?{query}&{FAST}")
    assert isinstance(hw, Bm13xxHardware)
    try:
        yield emu, hw
    finally:
        await hw.stop()
        await emu.stop()


def test_emulator_imports_no_driver_code() -> None:
    src = Path(__file__).parents[1] / "src" / "openmos" / "emulator"
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.startswith("openmos.hw") for n in names), f"{path.name} imports {names}"


async def test_bitaxe_one_chip_pll_readback_nonces_and_vr_fault_power_off() -> None:
    emu = EmulatedBitaxe("bitaxe-gamma", hashrate=40_000, diff1_shift=SHIFT)
    ports = await emu.start()
    hw = bitaxe_hw(ports)
    got: list[NonceResult] = []
    try:
        await hw.start(Provider(), got.append)
        chain = hw.chains[0]
        assert len(chain.chips) == 1
        assert await chain.read_frequencies(timeout_s=READ_BACK_S) == {0: 525.0}
        assert emu.chain.chips[0].mhz == 525.0
        await hw.set_chain_frequencies(0, [hw.quantise_frequency(401.0)])
        assert await chain.read_frequencies(timeout_s=READ_BACK_S) == {0: hw.quantise_frequency(401.0)}
        await wait_for(lambda: len(got) >= 3, 60, "3 nonces from the emulated BM1370")
        assert all(r.version & ~0x1FFFE000 == 0x20000000 for r in got)
        tel = hw.telemetry()
        assert tel.boards[0].chips[0].nonces >= 3 and tel.boards[0].chip_temperatures_c
        assert tel.fans and tel.fans[0].rpm > 0 and tel.input_power_w and tel.input_power_w > 0
        assert not tel.modelled
        # A regulator fault: the chip goes into reset and the regulator off within a second -- a property of the
        # driver (a poll_s well under a second, power cut at the first STATUS_WORD read that reports the fault),
        # checked as such rather than by this possibly loaded machine's clock.
        assert hw.settings.poll_s <= 0.5
        emu.inject_vr_fault()
        await wait_for(lambda: bool(emu.events.regulator_off_at and emu.events.reset_asserted_at), 60,
                       "the safe power-off")
        assert emu.vr.fault_reports == 1, f"{emu.vr.fault_reports} fault reports before the power-off"
        assert not emu.vr.on and not emu.reset_released and emu.emc.duty_pct == 100.0
        assert hw.stats.emergency_stops == 1 and "over-current" in hw.stats.last_fault
        assert not hw.telemetry().boards[0].enabled
    finally:
        await hw.stop()
        await emu.stop()


async def test_four_chip_chain_enumerates_sets_frequencies_in_one_batch_and_survives_faults(
        caplog: pytest.LogCaptureFixture) -> None:
    got: list[NonceResult] = []
    async with serial_chain("bm1366", 4, "chip=BM1366&chips=4&baud=1000000", hashrate=20_000) as (emu, hw):
        await hw.start(Provider(), got.append)
        chain = hw.chains[0]
        assert [c.address for c in chain.chips] == [0x00, 0x40, 0x80, 0xC0]
        assert [c.address for c in emu.chain.chips] == [0x00, 0x40, 0x80, 0xC0]
        assert emu.chain.baud() > 1_000_000 and emu.line.misrate_bytes == 0  # the baud switch took
        wanted = [300.0, 350.0, 400.0, 450.0]
        sent_before = chain.stats.frames_sent
        set_to = await hw.set_chain_frequencies(0, wanted)
        assert set_to == [hw.quantise_frequency(f) for f in wanted]
        assert await chain.read_frequencies(timeout_s=READ_BACK_S) == dict(enumerate(set_to))
        assert [c.mhz for c in emu.chain.chips] == set_to
        assert chain.stats.frames_sent > sent_before
        await hw.set_board_frequency(0, 401.0)  # the safety monitor's uniform throttle: one ramp for the chain
        throttled = hw.quantise_frequency(401.0)
        assert await chain.read_frequencies(timeout_s=READ_BACK_S) == dict.fromkeys(range(4), throttled)
        await hw.set_chain_frequencies(0, set_to)
        await wait_for(lambda: len({r.chip for r in got}) >= 2, 60, "nonces from two chips")
        # CRC errors and a dropped byte on the line: counted, and mining goes on.
        caplog.set_level(logging.WARNING)
        emu.chain.faults.crc_error_every = 2
        emu.chain.faults.drop_byte_next = 2
        await wait_for(lambda: chain.decoder.stats.crc_errors >= 2, 60, "corrupted frames")
        emu.chain.faults.crc_error_every = 0
        n = len(got)
        await wait_for(lambda: len(got) >= n + 2, 60, "nonces after the corruption")
        # A chip stops answering: after read_miss_limit unanswered reads in a row it is reported disabled, the
        # others keep hashing. (Short waits here: only the dead chip's state is asserted.)
        emu.chain.chips[2].dead = True
        dead = chain.chips[2]
        for _ in range(hw.settings.read_miss_limit):  # the counters loop may read it meanwhile: fewer needed
            await chain.read_registers(REG_ERROR_COUNT, [2], timeout_s=0.05)
            assert dead.missed_reads > 0 and dead.responding == (dead.missed_reads < hw.settings.read_miss_limit)
        assert not dead.responding
        assert not hw.telemetry().boards[0].chips[2].enabled
        n = len(got)
        await wait_for(lambda: len(got) >= n + 2, 60, "nonces with a dead chip")
        assert hw.stats.version_errors == 0


async def test_unknown_chip_ids_and_garbage_are_counted_not_fatal() -> None:
    async with serial_chain("bm1368", 2, "chip=BM1366") as (_, hw):
        with pytest.raises(ChainError, match="no BM1366 answered"):
            await hw.start(Provider(), lambda r: None)
        assert hw.chains == [] and not hw.powered


async def test_garbage_on_a_live_chain_is_counted() -> None:
    async with serial_chain("bm1370", 1, "chip=BM1370") as (emu, hw):
        await hw.start(Provider(), lambda r: None)
        chain = hw.chains[0]
        assert emu.port is not None
        # garbage, then a truncated reply
        emu.port.write(bytes(range(256)) + b"\xaa\x55\x13\x70")
        await wait_for(lambda: chain.decoder.stats.garbage_bytes >= 200, 10, "garbage counted")
        assert await chain.read_frequencies(timeout_s=READ_BACK_S) == {0: 525.0}  # still talking


async def test_missing_device_path_is_a_clear_error() -> None:
    hw = create_hardware("bitaxe:/dev/does-not-exist-ctl,/dev/does-not-exist-data")
    with pytest.raises(DeviceNotFound, match="/dev/does-not-exist-ctl"):
        await hw.start(Provider(), lambda r: None)
    hw = create_hardware("bm13xx:/dev/no-such-uart?chip=BM1366&chips=4")
    with pytest.raises(DeviceNotFound, match="/dev/no-such-uart"):
        await hw.start(Provider(), lambda r: None)
    for bad in ("bitaxe:/dev/x", "bm13xx:/dev/x", "bm13xx:/dev/x?chip=BM9999", "bitaxe:a,b?freq=nan",
                "bitaxe:a,b?freq=-1", "bitaxe:a,b?bogus=1", "bitaxe:a,b?model=delta", "bm13xx:/nope/board.toml"):
        with pytest.raises((ValueError, FileNotFoundError)):
            create_hardware(bad)


async def test_agent_mines_shares_accepted_by_the_local_pool() -> None:
    emu = EmulatedBitaxe("bitaxe-gamma", hashrate=40_000, diff1_shift=SHIFT)
    ports = await emu.start()
    pool = LocalPool(easy_pool_settings(start_difficulty=2.0 ** -17))  # half the chip's nonces (ticket 2**-18)
    await pool.start()
    config = AgentConfig.from_dict({"groups": [{"name": "main", "pools": [{"url": pool.url, "user": "e2e.bitaxe"}]}],
                                    "stratum": {"retry_delay_s": 0.2}})
    agent = MiningAgent(config, bitaxe_hw(ports))
    await agent.start()
    try:
        await wait_for(lambda: len(pool.accepted) >= 1, 120, "a share from the emulated Bitaxe")
    finally:
        await agent.stop()
        await pool.stop()
        await emu.stop()
    assert agent.stats.hardware_errors == 0
    assert pool.workers["e2e.bitaxe"].accepted >= 1


def test_hw_list_finds_bitaxe_raw_by_vid_pid(tmp_path: Path) -> None:
    from openmos.hw.board.usb import find_usb_boards

    dev = tmp_path / "1-2"
    dev.mkdir()
    (dev / "idVendor").write_text("c0de\n")
    (dev / "idProduct").write_text("cafe\n")
    (dev / "serial").write_text("AX123\n")
    for iface, tty in (("1-2:1.0", "ttyACM0"), ("1-2:1.2", "ttyACM1")):
        (dev / iface / "tty" / tty).mkdir(parents=True)
    other = tmp_path / "1-3"
    other.mkdir()
    (other / "idVendor").write_text("046d\n")
    (other / "idProduct").write_text("c077\n")
    [board] = find_usb_boards(tmp_path)
    assert board.ports == ("/dev/ttyACM0", "/dev/ttyACM1") and board.serial == "AX123"
    assert board.hardware_spec == "bitaxe:/dev/ttyACM0,/dev/ttyACM1"
    assert find_usb_boards(tmp_path / "missing") == []


async def test_mos_emulate_prints_a_spec_the_driver_can_use() -> None:
    import os
    import re
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openmos.cli.main", "emulate", "chain", "--chip", "bm1370", "--chips", "2",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "400"})
    try:
        assert proc.stdout is not None
        text = ""
        while "--hardware" not in text:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "mos emulate exited early"
            text += line.decode()
        spec = re.search(r"--hardware '([^']+)'", text)
        assert spec is not None
        hw = create_hardware(spec.group(1) + "&ramp_step=0.005")
        assert isinstance(hw, Bm13xxHardware)
        await hw.bring_up()
        assert len(hw.chains[0].chips) == 2
        await hw.stop()
    finally:
        proc.terminate()
        await proc.wait()


class SlowReader:
    """The driver's serial stream on a starved host: everything the chips send is read only once ``release()``
    is true (here: after the driver gave up waiting and asked again)."""

    def __init__(self, inner: Any, release: Callable[[], bool]) -> None:
        self.inner, self.release = inner, release

    async def read(self) -> bytes:
        data: bytes = await self.inner.read()
        while not self.release():
            await asyncio.sleep(0.01)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_counter_reads_answered_late_are_retried_not_faults(caplog: pytest.LogCaptureFixture) -> None:
    """Under CPU load the serial reader ran after the 0.5 s read timeout: every chip was marked not responding
    (disabled in telemetry, cgminer, metrics) at the first late read, and the late answers were logged as
    "unexpected register reply". The read is retried (the late first answer counts) and a chip is only marked
    after read_miss_limit misses in a row."""
    async with serial_chain("bm1366", 2, "chip=BM1366&chips=2&read_retries=1&read_misses=2") as (_, hw):
        assert (hw.settings.read_retries, hw.settings.read_miss_limit) == (1, 2)
        await hw.start(Provider(), lambda r: None)
        chain = hw.chains[0]
        given_up = False
        chain.stream = SlowReader(chain.stream, lambda: given_up or getattr(chain.stats, "read_retries", 0) > 0)
        caplog.set_level(logging.WARNING)
        try:
            await chain.read_counters(timeout_s=hw.settings.read_timeout_s, retries=hw.settings.read_retries)
        finally:
            given_up = True
        assert all(c.responding and c.missed_reads == 0 for c in chain.chips), chain.chips
        # At least one of the two register reads was held (the reader may already have been waiting on the
        # unwrapped stream when it was swapped, so the first read can get through in time).
        assert chain.stats.read_timeouts == 0 and chain.stats.read_retries >= 1
        assert all(c.hash_count is not None for c in chain.chips)
        await wait_for(lambda: chain.stats.late_replies >= 1, 30, "the answers to the repeated reads")
        assert "unexpected register reply" not in caplog.text and chain.stats.unexpected_replies == 0
        assert all(c.enabled for c in hw.telemetry().boards[0].chips)


@pytest.mark.parametrize("query", ["read_retries=9", "read_misses=0", "read_timeout=nan", "read_timeout=1e400",
                                   "read_timeout=11", "read_retries=-1"])
def test_read_tolerance_options_are_checked(query: str) -> None:
    with pytest.raises(ValueError, match="read_"):
        create_hardware(f"bm13xx:/dev/null?chip=BM1366&{query}")
