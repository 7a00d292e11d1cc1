"""CPU backend: really hashes SHA-256d with hashlib, one worker process per "chip".

Each worker takes a work item, scans nonces in short chunks over its own midstate and asks for fresh work
after ``work_seconds`` (or at once when the agent bumps the generation), so a new job -- clean or not --
reaches the hash loop within about a second. It reports hashes done per chip, like an ASIC hash counter.
A crashed worker process is replaced; its in-flight chunk is lost and counted. Worker processes ignore
Ctrl-C (the agent stops them) and die on their own if the agent process disappears, even by SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from openmos.base.tasks import cancel_all
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


MAX_NONCES_PER_CHUNK = 256  # a target that makes every hash a "share" must not fill memory
CALIBRATION_NONCES = 20_000


def scan_chunk(header80: bytes, nonce_start: int, count: int, target: int) -> tuple[list[int], int]:
    """Nonces in [start, start+count) whose sha256d(header) meets target, and how many nonces were tried.

    Runs in a worker process. Stops early after MAX_NONCES_PER_CHUNK hits, so the answer stays small.
    """
    header = BlockHeader.parse(header80)
    midstate = header.midstate()
    end = min(nonce_start + count, 1 << 32)
    found: list[int] = []
    for nonce, _ in midstate.scan(header.tail12(), range(nonce_start, end), target):
        found.append(nonce)
        if len(found) >= MAX_NONCES_PER_CHUNK:
            return found, nonce + 1 - nonce_start
    return found, end - nonce_start


def _worker_init(agent_pid: int) -> None:
    """In each hashing process: ignore Ctrl-C, and exit as soon as the agent process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":  # the forkserver (our parent) dies with the agent: take that as the signal
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(agent_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="agent-watch", daemon=True).start()


def _preload_modules() -> list[str]:
    """Modules for the fork server to import once, so each worker forks with them already loaded.

    multiprocessing re-runs the program's main module in every worker; with this package's modules
    preloaded that costs only the main module's own top level, not its whole import tree, once per worker.
    The main module itself is left out (runpy warns when it is already imported).
    """
    main = sys.modules.get("__main__")
    main_name = getattr(getattr(main, "__spec__", None), "name", None)
    package = __name__.split(".")[0]
    loaded = [name for name in list(sys.modules) if name.split(".")[0] == package and name != main_name]
    return sorted({*loaded, __name__})


def calibrate_rate() -> float:
    """Single-process hash rate of this machine (hashes/s), from a short scan in this process."""
    header = BlockHeader(0x20000000, bytes(32), bytes(32), 0, 0x1D00FFFF, 0)
    began = time.perf_counter()
    scan_chunk(header.serialize(), 0, CALIBRATION_NONCES, 0)
    return CALIBRATION_NONCES / max(time.perf_counter() - began, 1e-6)


MAX_WORKERS_PER_CORE = 4


def cpu_workers(arg: str) -> int:
    """The worker count of a ``cpu:N`` spec (``""``: 0, one per core). More than ``MAX_WORKERS_PER_CORE`` per core
    only adds processes (``cpu:100000`` in a config would start 100,000 of them): ValueError."""
    if not arg:
        return 0
    limit = MAX_WORKERS_PER_CORE * (os.cpu_count() or 1)
    if not arg.isdigit() or len(arg) > 6 or not 1 <= int(arg) <= limit:
        raise ValueError(f"cpu:N needs N from 1 to {limit} ({MAX_WORKERS_PER_CORE} per CPU core here)")
    return int(arg)


@dataclass(frozen=True)
class CpuSettings:
    workers: int = 0  # 0: one per core
    chunk_seconds: float = 0.25  # aim for chunks of this length (bounds latency after a new block)
    work_seconds: float = 1.0  # then fetch a fresh work item, so non-clean job updates arrive within ~1 s
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
        self._rate = [0.0] * self.workers  # measured hashes/s per worker
        self._calibrated: float | None = None
        self.crashed_chunks = 0

    async def start(self, provider: WorkProvider, sink: NonceSink) -> None:
        self._executor = self._new_executor()
        began = time.monotonic()
        await asyncio.to_thread(self._spawn_workers)
        log.info("%d CPU hashing worker(s) ready in %.1f s", self.workers, time.monotonic() - began)
        self._tasks = [asyncio.create_task(self._run_chip(i, provider, sink), name=f"cpu-chip-{i}")
                       for i in range(self.workers)]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            # Workers finish their current chunk (a fraction of a second) and exit; wait for that, bounded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(executor.shutdown, wait=True), 5.0)

    def telemetry(self) -> HardwareTelemetry:
        return HardwareTelemetry(self.model, [BoardTelemetry(0, list(self._chips))])

    def record_error(self, board: int, chip: int) -> None:
        if 0 <= chip < len(self._chips):
            self._chips[chip].errors += 1

    def expected_hashrate(self) -> float:
        """Measured rate of all workers once each has run a chunk; before that, a short calibration."""
        if all(self._rate):
            return sum(self._rate)
        if self._calibrated is None:
            self._calibrated = calibrate_rate()
        return self._calibrated * self.workers

    async def _run_chip(self, chip: int, provider: WorkProvider, sink: NonceSink) -> None:
        loop = asyncio.get_running_loop()
        while True:
            work = provider.next_work()
            if work is None:
                await asyncio.sleep(0.1)
                continue
            deadline = time.monotonic() + self.settings.work_seconds
            for roll in range(self.settings.rolls_per_work if work.version_mask else 1):
                version = version_for_index(work.header.version, work.version_mask, roll)
                header = BlockHeader(version, work.header.prev_hash, work.header.merkle_root,
                                     work.header.ntime, work.header.bits, 0)
                if not await self._scan_header(loop, chip, work, header, provider, sink, deadline):
                    break

    async def _scan_header(self, loop: asyncio.AbstractEventLoop, chip: int, work: WorkItem,
                           header: BlockHeader, provider: WorkProvider, sink: NonceSink, deadline: float) -> bool:
        """Scan one header's nonce range in chunks; False when the work became stale or its time is up."""
        start = 0
        while start < 1 << 32:
            if provider.generation != work.generation or time.monotonic() >= deadline:
                return False
            count = self._chunk[chip]
            began = time.monotonic()
            try:
                assert self._executor is not None
                nonces, done = await loop.run_in_executor(self._executor, scan_chunk, header.serialize(), start,
                                                          count, work.target)
            except BrokenProcessPool:
                self.crashed_chunks += 1
                log.error("CPU worker crashed; restarting the worker pool (chunk of %d nonces lost)", count)
                self._restart_executor()
                continue
            elapsed = time.monotonic() - began
            self._chips[chip].hashes += done
            self._chips[chip].nonces += len(nonces)
            # Reported even when the work was abandoned meanwhile: only the agent knows whether a nonce is
            # still worth a share (a pool switch or a reconnect does not end the old session's jobs).
            for nonce in nonces:
                sink(NonceResult(work.work_id, nonce, header.version, 0, chip))
            # Adapt the chunk so each one takes about chunk_seconds.
            if elapsed > 0 and done == count:
                self._rate[chip] = done / elapsed
                ideal = int(count * self.settings.chunk_seconds / elapsed)
                self._chunk[chip] = max(1_000, min(ideal, count * 2, 1 << 24))
            start += done
        return True

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver, not fork: forked workers would inherit this process's sockets (pool connections,
        # API listeners) and keep them open after the parent closes them.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_preload_modules())  # only matters before the fork server first starts
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                   initializer=_worker_init, initargs=(os.getpid(),))

    def _spawn_workers(self) -> None:
        """Start every worker process now (in a thread: the first start waits for the fork server's imports)."""
        executor = self._executor
        if executor is not None:
            for future in [executor.submit(os.getpid) for _ in range(self.workers)]:
                future.result()

    def _restart_executor(self) -> None:
        old = self._executor
        self._executor = self._new_executor()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
