"""CPU backend: really hashes SHA-256d with hashlib, one worker process per "chip".

Each worker takes a work item, scans nonces in chunks over its own midstate and rolls version bits (when the
pool allows) before asking for fresh work. It reports hashes done per chip, like an ASIC hash counter.
A crashed worker process is replaced; its in-flight chunk is lost and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from openmos.bitcoin import BlockHeader
from openmos.bitcoin.version import version_for_index
from openmos.hw.interface import (
    BoardTelemetry,
    ChipTelemetry,
    HardwareTelemetry,
    MiningHardware,
    NonceSink,
    WorkProvider,
)
from openmos.hw.work import NonceResult, WorkItem

log = logging.getLogger(__name__)


def scan_chunk(header80: bytes, nonce_start: int, count: int, target: int) -> list[int]:
    """Nonces in [start, start+count) whose sha256d(header) meets target. Runs in a worker process."""
    header = BlockHeader.parse(header80)
    midstate = header.midstate()
    end = min(nonce_start + count, 1 << 32)
    return [nonce for nonce, _ in midstate.scan(header.tail12(), range(nonce_start, end), target)]


@dataclass(frozen=True)
class CpuSettings:
    workers: int = 0  # 0: one per core
    chunk_seconds: float = 0.5  # aim for chunks of this length (bounds latency after a new block)
    rolls_per_work: int = 8  # version-rolled midstates tried before asking for a fresh work item


class CpuHardware(MiningHardware):
    model = "CPU (hashlib)"

    def __init__(self, settings: CpuSettings | None = None) -> None:
        self.settings = settings or CpuSettings()
        self.workers = self.settings.workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._chips = [ChipTelemetry(i, None) for i in range(self.workers)]
        self._chunk = [20_000] * self.workers
        self.crashed_chunks = 0

    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        self._executor = self._new_executor()
        self._tasks = [asyncio.create_task(self._run_chip(i, provider, sink), name=f"cpu-chip-{i}")
                       for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def telemetry(self) -> HardwareTelemetry:
        return HardwareTelemetry(self.model, [BoardTelemetry(0, list(self._chips))])

    def record_error(self, board: int, chip: int) -> None:
        if 0 <= chip < len(self._chips):
            self._chips[chip].errors += 1

    async def _run_chip(self, chip: int, provider: WorkProvider, sink: NonceSink) -> None:
        loop = asyncio.get_running_loop()
        while True:
            work = provider.next_work()
            if work is None:
                await asyncio.sleep(0.1)
                continue
            for roll in range(self.settings.rolls_per_work if work.version_mask else 1):
                if provider.generation != work.generation:
                    break
                version = version_for_index(work.header.version, work.version_mask, roll)
                header = BlockHeader(version, work.header.prev_hash, work.header.merkle_root,
                                     work.header.ntime, work.header.bits, 0)
                if not await self._scan_header(loop, chip, work, header, provider, sink):
                    break

    async def _scan_header(self, loop: asyncio.AbstractEventLoop, chip: int, work: WorkItem,
                           header: BlockHeader, provider: WorkProvider, sink: NonceSink) -> bool:
        """Scan the whole nonce range of one header in chunks; False when the work became stale."""
        start = 0
        while start < 1 << 32:
            if provider.generation != work.generation:
                return False
            count = self._chunk[chip]
            began = time.monotonic()
            try:
                assert self._executor is not None
                nonces = await loop.run_in_executor(self._executor, scan_chunk, header.serialize(), start,
                                                    count, work.target)
            except BrokenProcessPool:
                self.crashed_chunks += 1
                log.error("CPU worker crashed; restarting the worker pool (chunk of %d nonces lost)", count)
                self._restart_executor()
                continue
            elapsed = time.monotonic() - began
            self._chips[chip].hashes += count
            self._chips[chip].nonces += len(nonces)
            for nonce in nonces:
                sink(NonceResult(work.work_id, nonce, header.version, 0, chip))
            # Adapt the chunk so each one takes about chunk_seconds.
            if elapsed > 0:
                ideal = int(count * self.settings.chunk_seconds / elapsed)
                self._chunk[chip] = max(1_000, min(ideal, count * 2, 1 << 24))
            start += count
        return True

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver, not fork: forked workers would inherit this process's sockets (pool connections,
        # API listeners) and keep them open after the parent closes them.
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("forkserver"))

    def _restart_executor(self) -> None:
        old = self._executor
        self._executor = self._new_executor()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
