"""One BM13xx chain on one serial stream: enumeration, addressing, registers, PLL, ticket mask, jobs, nonces.

A ``Chain`` owns the stream's reader task. Register reads are matched to replies by (chip address, register);
nonce replies are decoded to (job slot, chip, core, small core, rolled version) and handed to ``on_nonce``.
Everything the chain receives is hostile: bad CRCs, garbage, replies from unknown chips and nonces for
unknown job slots are logged (rate-limited) and counted in ``ChainStats``, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openmos.base.tasks import cancel_and_wait
from openmos.hw.bm13xx import protocol as p
from openmos.hw.bm13xx.chip import ChipType, PllSetting
from openmos.hw.transport.patience import retry_waits
from openmos.hw.transport.serial import ByteStream

log = logging.getLogger(__name__)


class ChainError(RuntimeError):
    """The chain did not answer as a chain of this chip type should."""


@dataclass(frozen=True, slots=True)
class NonceHit:
    slot: int
    chip: int  # index in the chain
    core: int
    small_core: int
    nonce: int
    version_bits: int


@dataclass
class ChainStats:
    nonces: int = 0
    unknown_chip_nonces: int = 0  # nonce from an address no chip has
    register_replies: int = 0
    unexpected_replies: int = 0  # register replies nobody asked for (or from unknown chips)
    unknown_chip_ids: int = 0  # enumeration replies with a chip id of another type
    read_timeouts: int = 0  # chip reads given up after every retry
    read_retries: int = 0  # reads sent again because a chip had not answered in time
    late_replies: int = 0  # answers that came after their read was retried or given up (a slow host, not a chip)
    frames_sent: int = 0


@dataclass
class ChipState:
    index: int
    address: int
    frequency_mhz: float = 0.0
    responding: bool = True  # False after ``Chain.miss_limit`` reads in a row went unanswered
    missed_reads: int = 0  # consecutive reads this chip left unanswered (any reply or nonce resets it)
    hash_count: int | None = None  # last raw value of the total hash counter
    error_count: int | None = None  # last raw value of the error counter


class _RateLimitedLog:
    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval_s:
            self._last[key] = now
            log.warning(msg, *args)


class Chain:
    def __init__(self, stream: ByteStream, chip: ChipType, *, name: str = "chain",
                 on_nonce: Callable[[NonceHit], None] | None = None) -> None:
        self.stream = stream
        self.chip = chip
        self.name = name
        self.on_nonce = on_nonce
        self.decoder = p.ResponseDecoder()
        self.stats = ChainStats()
        self.chips: list[ChipState] = []
        self._by_address: dict[int, ChipState] = {}
        self._waiting: dict[tuple[int, int], asyncio.Future[int]] = {}
        self._enum_replies: list[p.RegisterReply] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._slot = 0
        self._write_lock = asyncio.Lock()
        self._warn = _RateLimitedLog()
        self.ticket_difficulty = 1
        self.miss_limit = 1  # consecutive unanswered reads before a chip counts as not responding
        self._overdue: set[tuple[int, int]] = set()  # reads retried or given up: a reply may still come
        self.closed = asyncio.Event()

    # -- plumbing -----------------------------------------------------------------------------------

    def start_reader(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-reader")

    async def close(self) -> None:
        await cancel_and_wait(self._reader)
        self._reader = None

    async def send(self, *frames: bytes) -> None:
        """Write frames in one go (a batch is one write, not one await per chip)."""
        async with self._write_lock:
            self.stats.frames_sent += len(frames)
            await self.stream.write(b"".join(frames))

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.stream.read()
                crc_before = self.decoder.stats.crc_errors
                for reply in self.decoder.feed(data):
                    if isinstance(reply, p.NonceReply):
                        self._on_nonce_reply(reply)
                    else:
                        self._on_register_reply(reply)
                if self.decoder.stats.crc_errors != crc_before:
                    self._warn.warning("crc", "%s: %d frames with bad CRC so far (line noise or a failing chip)",
                                       self.name, self.decoder.stats.crc_errors)
        except ConnectionError as exc:
            log.error("%s: %s", self.name, exc)
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ChainError(f"{self.name}: serial stream closed"))

    def _on_register_reply(self, reply: p.RegisterReply) -> None:
        self.stats.register_replies += 1
        if self._enum_replies is not None and reply.register == p.REG_CHIP_ID:
            self._enum_replies.append(reply)
            return
        key = (reply.chip_address, reply.register)
        state = self._by_address.get(reply.chip_address)
        if state is not None:
            state.missed_reads, state.responding = 0, True  # it answers: a slow answer is not a dead chip
        fut = self._waiting.pop(key, None)
        if (fut is None or fut.done()) and key in self._overdue:
            self._overdue.discard(key)  # bounded: at most one key per chip and register ever read
            self.stats.late_replies += 1
            return
        if fut is None or fut.done():
            self.stats.unexpected_replies += 1
            self._warn.warning("unexpected", "%s: unexpected register reply %s", self.name, reply)
            return
        fut.set_result(reply.value)

    def _on_nonce_reply(self, reply: p.NonceReply) -> None:
        nonce_be = reply.nonce_be
        address = self.chip.chip_address_of(nonce_be)
        state = self._by_address.get(address)
        if state is None and len(self.chips) == 1:
            state = self.chips[0]  # a lone chip owns the whole space whatever its address bits say
        if state is None:
            self.stats.unknown_chip_nonces += 1
            self._warn.warning("nochip", "%s: nonce from unknown chip address %#04x", self.name, address)
            return
        self.stats.nonces += 1
        state.missed_reads, state.responding = 0, True
        hit = NonceHit(self.chip.job_id_from_header(reply.result_header), state.index,
                       self.chip.core_of(nonce_be), self.chip.small_core_from_header(reply.result_header),
                       reply.nonce, reply.version_bits)
        if self.on_nonce is not None:
            self.on_nonce(hit)

    # -- enumeration --------------------------------------------------------------------------------

    async def enumerate(self, *, quiet_s: float = 0.5, expected: int | None = None) -> int:
        """Broadcast a chip-id read, count the replies until the line is quiet, then address the chips."""
        self.start_reader()
        self._enum_replies = []
        try:
            await self.send(p.read_register(0, p.REG_CHIP_ID, broadcast=True))
            seen = -1
            while seen != len(self._enum_replies):
                seen = len(self._enum_replies)
                await asyncio.sleep(quiet_s)
            replies = self._enum_replies
        finally:
            self._enum_replies = None
        ours = [r for r in replies if r.value >> 16 == self.chip.chip_id]
        foreign = len(replies) - len(ours)
        if foreign:
            self.stats.unknown_chip_ids += foreign
            ids = sorted({f"{r.value >> 16:#06x}" for r in replies if r.value >> 16 != self.chip.chip_id})
            log.warning("%s: %d chip(s) answered with chip id %s, not %s's %#06x: ignored", self.name, foreign,
                        ", ".join(ids), self.chip.name, self.chip.chip_id)
        count = len(ours)
        if count == 0:
            raise ChainError(f"{self.name}: no {self.chip.name} answered the chip-id read "
                             f"(check power, reset and the serial port)")
        if expected is not None and count != expected:
            log.warning("%s: found %d %s chips, the board should have %d", self.name, count, self.chip.name,
                        expected)
        addresses = p.chip_addresses(count)
        await self.send(p.chain_inactive(), *(p.set_address(a) for a in addresses))
        self.chips = [ChipState(i, a) for i, a in enumerate(addresses)]
        self._by_address = {c.address: c for c in self.chips}
        log.info("%s: %d x %s enumerated at addresses %s", self.name, count, self.chip.name,
                 ", ".join(f"{a:#04x}" for a in addresses[:8]) + (" ..." if count > 8 else ""))
        return count

    # -- registers ----------------------------------------------------------------------------------

    async def write_register(self, chip: int | None, register: int, value: int) -> None:
        """Write to one chip (by index) or to all (None)."""
        if chip is None:
            await self.send(p.write_register(0, register, value, broadcast=True))
        else:
            await self.send(p.write_register(self.chips[chip].address, register, value))

    async def read_registers(self, register: int, chips: Sequence[int] | None = None, *,
                             timeout_s: float = 0.5, retries: int = 0) -> dict[int, int]:
        """Read one register from several chips (one batch write); chips that stay silent are left out.

        Chips silent for ``timeout_s`` are asked again up to ``retries`` times, each wait twice the last (a
        loaded host reads its serial port late: the first answer still counts when it comes). A chip left
        silent after every retry has missed a read; ``miss_limit`` misses in a row mark it not responding.
        """
        self.start_reader()
        targets = [self.chips[i] for i in (range(len(self.chips)) if chips is None else chips)]
        loop = asyncio.get_running_loop()
        futures: dict[int, asyncio.Future[int]] = {}
        for state in targets:
            key = (state.address, register)
            fut = self._waiting.get(key)
            if fut is None or fut.done():
                fut = self._waiting[key] = loop.create_future()
            futures[state.index] = fut
        pending = targets
        for attempt, wait_s in enumerate(retry_waits(timeout_s, retries)):
            if attempt:
                self.stats.read_retries += len(pending)
                self._overdue.update((s.address, register) for s in pending)
            await self.send(*(p.read_register(s.address, register) for s in pending))
            await asyncio.wait([futures[s.index] for s in pending], timeout=wait_s)
            pending = [s for s in pending if not futures[s.index].done()]
            if not pending:
                break
        values: dict[int, int] = {}
        for index, fut in futures.items():
            state = self.chips[index]
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                values[index] = fut.result()
                state.missed_reads, state.responding = 0, True
            else:
                self.stats.read_timeouts += 1
                state.missed_reads += 1
                if state.missed_reads >= self.miss_limit:
                    state.responding = False
                key = (state.address, register)
                self._waiting.pop(key, None)
                self._overdue.add(key)
                fut.cancel()
        return values

    async def read_register(self, chip: int, register: int, *, timeout_s: float = 0.5, retries: int = 0) -> int:
        values = await self.read_registers(register, [chip], timeout_s=timeout_s, retries=retries)
        if chip not in values:
            raise ChainError(f"{self.name}: chip {chip} did not answer a read of register {register:#04x}")
        return values[chip]

    # -- configuration ------------------------------------------------------------------------------

    async def configure(self, *, version_mask: int) -> None:
        """The chip type's bring-up writes, version rolling and the default ticket mask."""
        frames = [self.chip.version_write(version_mask)]
        frames += [p.write_register(0, reg, value, broadcast=True) for reg, value in self.chip.init_writes]
        for state in self.chips:
            frames += [p.write_register(state.address, reg, value) for reg, value in self.chip.per_chip_writes]
        if self.chip.hash_counting:
            frames.append(p.write_register(0, p.REG_HASH_COUNTING, self.chip.hash_counting, broadcast=True))
        await self.send(*frames)
        await self.set_ticket_difficulty(self.ticket_difficulty)

    async def set_version_mask(self, mask: int) -> None:
        await self.send(self.chip.version_write(mask))

    async def set_ticket_difficulty(self, difficulty: float) -> int:
        value, effective = p.ticket_mask_value(difficulty)
        await self.write_register(None, p.REG_TICKET_MASK, value)
        self.ticket_difficulty = effective
        return effective

    async def set_baud(self, baud: int) -> float:
        """Switch every chip and then the host side to the nearest rate the chips can make."""
        divider = p.uart_divider_for(baud)
        await self.write_register(None, p.REG_FAST_UART, 0x11300000 | (divider << 8))
        await asyncio.sleep(0.05)  # let the frame leave at the old rate
        self.stream.set_baud(baud)
        return p.baud_for_divider(divider)

    async def set_frequencies(self, targets: Sequence[float] | float, *, step_delay_s: float = 0.1) -> list[float]:
        """Ramp every chip to its target on the chip type's grid, all chips per step in one write.

        Returns the quantised frequencies set. Chips start from their last known frequency (the lowest
        grid point after reset).
        """
        n = len(self.chips)
        wanted = [float(targets)] * n if isinstance(targets, int | float) else [float(t) for t in targets]
        if len(wanted) != n:
            raise ValueError(f"{self.name}: {len(wanted)} frequencies for {n} chips")
        lowest = self.chip.pll_grid[0][0]
        ramps = [self.chip.ramp(c.frequency_mhz or lowest, w) for c, w in zip(self.chips, wanted, strict=True)]
        steps = max(len(r) for r in ramps)
        uniform = len(set(map(tuple, ramps))) == 1 and n > 1
        for k in range(steps):
            if uniform:
                f = ramps[0][min(k, len(ramps[0]) - 1)]
                frames = [p.write_register(0, p.REG_PLL, self.chip.pll_for(f).register(), broadcast=True)]
            else:
                frames = [p.write_register(c.address, p.REG_PLL, self.chip.pll_for(r[min(k, len(r) - 1)]).register())
                          for c, r in zip(self.chips, ramps, strict=True) if k < len(r)]
            await self.send(*frames)
            if k < steps - 1:
                await asyncio.sleep(step_delay_s)
        for c, r in zip(self.chips, ramps, strict=True):
            c.frequency_mhz = r[-1]
        return [c.frequency_mhz for c in self.chips]

    async def read_frequencies(self, *, timeout_s: float = 0.5) -> dict[int, float]:
        """PLL read-back: what each chip's register 0x08 holds, as MHz (chips silent for timeout_s left out)."""
        values = await self.read_registers(p.REG_PLL, timeout_s=timeout_s)
        return {i: PllSetting.from_register(v).mhz for i, v in values.items()}

    async def read_counters(self, *, timeout_s: float = 0.5, retries: int = 0) -> None:
        """Refresh the chips' total-hash and error counters (see ``read_registers`` for silent chips)."""
        for register, attr in ((p.REG_TOTAL_HASH_COUNT, "hash_count"), (p.REG_ERROR_COUNT, "error_count")):
            for index, value in (await self.read_registers(register, timeout_s=timeout_s,
                                                           retries=retries)).items():
                setattr(self.chips[index], attr, value)

    # -- jobs ---------------------------------------------------------------------------------------

    def next_slot(self) -> int:
        self._slot = (self._slot + self.chip.job_slot_step) % self.chip.job_slots
        return self._slot

    def job_frame(self, slot: int, *, version: int, prev_hash: bytes, merkle_root: bytes, ntime: int,
                  nbits: int) -> bytes:
        data = p.encode_job_data(self.chip.job_header(slot), nbits, ntime, merkle_root, prev_hash, version)
        return p.job_command(data)
