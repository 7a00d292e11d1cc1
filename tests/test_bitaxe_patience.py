"""Bitaxe sensor reads on a loaded host: the control port's answer read after the 1 s wait used to fail the
whole sensor poll ("sensor read failed" every time the CPU was busy). A request is now asked again (each wait
doubled; the late first answer counts), late answers are counted rather than taken for another request's,
and the monitor reports the sensors failing only after read_miss_limit failed polls in a row -- the same
patience (``openmos.hw.transport.patience``) as the BM13xx chips' counter reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from openmos.emulator.devices import EmulatedBitaxe
from openmos.hw.bm13xx import chip_type
from openmos.hw.bm13xx.backend import Bm13xxHardware, BoardSensors
from openmos.hw.board.bitaxe import BitaxeBoard
from openmos.hw.factory import create_hardware
from openmos.hw.transport.bitaxe_raw import BitaxeRawControl, ControlError
from openmos.hw.transport.patience import MissStreak, retry_waits

from helpers import wait_for


class SlowPeer:
    """A bitaxe-raw control port (fan tach page only) whose answers reach the driver only once the driver
    has asked ``answer_after`` times: a host too busy to read its serial port in time."""

    def __init__(self, answer_after: int = 2, rpm: int = 4321) -> None:
        self.answer_after, self.rpm = answer_after, rpm
        self.asked: list[int] = []  # ids of the requests written
        self.held: list[bytes] = []
        self.out: asyncio.Queue[bytes] = asyncio.Queue()

    async def write(self, data: bytes) -> None:
        assert int.from_bytes(data[:2], "little") == len(data)
        ident = data[2]
        self.asked.append(ident)
        payload = bytes((ident,)) + self.rpm.to_bytes(2, "little")
        self.held.append((len(payload) + 2).to_bytes(2, "little") + payload)
        if len(self.asked) % self.answer_after == 0:  # the backlog is read at last, oldest answer first
            for packet in self.held:
                self.out.put_nowait(packet)
            self.held.clear()

    async def read(self) -> bytes:
        return await self.out.get()

    def set_baud(self, baud: int) -> None:
        pass

    def close(self) -> None:
        pass


async def test_an_answer_read_late_is_asked_again_and_the_first_answer_counts() -> None:
    peer = SlowPeer(answer_after=2)
    control = BitaxeRawControl(peer, timeout_s=0.2, retries=2)
    assert await control.fan_rpm() == 4321
    assert len(peer.asked) == 2 and control.stats.retries == 1 and control.stats.timeouts == 0
    # The second attempt's answer comes with the next request's: counted as late, not taken for that answer.
    peer.answer_after = 1
    peer.rpm = 1234
    assert await control.fan_rpm() == 1234
    assert control.stats.late_responses == 1 and control.stats.stray_responses == 0


async def test_a_port_that_never_answers_fails_after_every_retry() -> None:
    peer = SlowPeer(answer_after=10**6)
    control = BitaxeRawControl(peer, timeout_s=0.01, retries=2)
    with pytest.raises(ControlError, match=r"within 0.07 s \(3 tries\)"):
        await control.fan_rpm()
    assert len(peer.asked) == 3 and control.stats.timeouts == 1 and control.stats.retries == 2


async def test_the_emergency_power_off_is_sent_once_not_retried_on_a_dead_port() -> None:
    peer = SlowPeer(answer_after=10**6)
    board = BitaxeBoard("/dev/null", "/dev/null", chip_type("BM1370"))
    board.control = BitaxeRawControl(peer, timeout_s=0.01, retries=2)
    await board.emergency_off("test")
    assert len(peer.asked) == 1 and board.control.retries == 2  # one try; the patience is back afterwards


def test_the_patience_is_the_one_the_chip_reads_use() -> None:
    assert retry_waits(0.5, 2) == [0.5, 1.0, 2.0] and retry_waits(1.0, 0) == [1.0]
    streak = MissStreak(limit=3)
    assert [streak.miss() for _ in range(4)] == [False, False, True, False]  # said once, at the limit
    assert streak.failing and streak.hit() and not streak.failing and not streak.hit()


class SlowReader:
    """The driver's control-port stream on a starved host: what the board sends is read only once
    ``release()`` is true (here: once the driver gave up waiting and asked again)."""

    def __init__(self, inner: Any, release: Callable[[], bool]) -> None:
        self.inner, self.release = inner, release

    async def read(self) -> bytes:
        while not self.release():  # the bytes wait in the port, as they do for a host that reads late
            await asyncio.sleep(0.01)
        data: bytes = await self.inner.read()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_emulated_bitaxe_sensors_read_late_are_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    emu = EmulatedBitaxe("bitaxe-gamma")
    ports = await emu.start()
    hw = create_hardware(f"bitaxe:{ports[0]},{ports[1]}?diff1_shift=20")
    assert isinstance(hw, Bm13xxHardware) and isinstance(hw.board, BitaxeBoard)
    board = hw.board
    try:
        await board.open()
        control = board.control
        assert control is not None and control.retries == hw.settings.read_retries == 2
        control.stream = SlowReader(control.stream, lambda: control.stats.retries > 0)
        caplog.set_level(logging.WARNING)
        sensors = await board.sensors()
        assert sensors.fan_rpm and sensors.vout_v and sensors.chip_temps_c
        assert control.stats.retries >= 1 and control.stats.timeouts == 0
        assert (await board.sensors()).fan_rpm  # its reads parse the second answer to the repeated request
        assert control.stats.late_responses >= 1 and control.stats.stray_responses == 0
        assert not caplog.records, [r.getMessage() for r in caplog.records]
    finally:
        await board.close()
        await emu.stop()


class FlakyBoard:
    """Sensors that fail ``fail`` polls in a row, then answer."""

    name = "flaky"

    def __init__(self, fail: int) -> None:
        self.fail, self.polls = fail, 0

    async def sensors(self) -> BoardSensors:
        self.polls += 1
        if self.polls <= self.fail:
            raise ControlError("control port: no answer")
        return BoardSensors(board_temps_c=[40.0])


@pytest.mark.parametrize(("fail", "warned"), [(2, False), (3, True)])
async def test_the_monitor_reports_sensors_failing_only_after_misses_in_a_row(
        caplog: pytest.LogCaptureFixture, fail: int, warned: bool) -> None:
    hw = create_hardware("bm13xx:/dev/null?chip=BM1366&read_misses=3&poll=0.01")
    assert isinstance(hw, Bm13xxHardware)
    board = FlakyBoard(fail)
    hw.board = board  # type: ignore[assignment]
    caplog.set_level(logging.INFO, "openmos.hw.bm13xx.backend")
    task = asyncio.create_task(hw._monitor_loop())
    try:
        await wait_for(lambda: board.polls > fail + 1, 30, "a good poll after the failures")
    finally:
        hw._stopped.set()
        await task
    assert hw.stats.sensor_misses == fail
    text = caplog.text
    assert ("sensor read failed 3 times in a row" in text) is warned
    assert ("sensors answer again" in text) is warned
    assert not any(r.levelno >= logging.WARNING for r in caplog.records) or warned
