"""The mining agent: pool jobs -> hardware work -> re-validated nonces -> shares.

Every nonce a backend reports is hashed again here before anything is submitted; a nonce that does not
meet the target it was issued with is a hardware error and is charged to the chip that produced it.

Job switching follows the meaning of a job, not only its flag: a job whose previous-block hash differs
from the current one invalidates all outstanding work at once (a pool may announce a new tip with
``clean_jobs=false``), and nonces found for a superseded block are dropped, never submitted. The
difficulty mined at is the pool's, raised by the share-rate governor when it would flood; submits in
flight are capped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from openmos import __version__
from openmos.base.tasks import cancel_and_wait
from openmos.bitcoin import BlockHeader, difficulty_to_target, hash_difficulty, hash_to_int
from openmos.bitcoin.target import bits_to_target
from openmos.hw.interface import HardwareTelemetry, MiningHardware
from openmos.hw.work import NonceResult, WorkItem
from openmos.maintenance import MaintenanceMonitor
from openmos.miner.config import AgentConfig, PerformanceConfig
from openmos.miner.governor import governed_difficulty
from openmos.miner.pool_manager import PoolConnection, PoolGroup, PoolManager, SessionPolicy
from openmos.miner.safety import SafetyMonitor, has_sensors
from openmos.miner.stats import HashrateMeter
from openmos.miner.validation import InvalidNonce, WorkValidator
from openmos.security.pools import enforce_pools
from openmos.security.scanner import Scanner, ScanReport
from openmos.stratum.client import SubmitResult
from openmos.stratum.difficulty import DifficultyRange, seconds_per_share, suggested_difficulty
from openmos.stratum.job import Share, StratumJob
from openmos.stratum.session import PoolSession
from openmos.tuning import (
    Autotuner,
    CoolingConfig,
    CoolingMode,
    PerformanceTarget,
    ProfileStore,
    ThermalLimits,
)

log = logging.getLogger(__name__)


def _cooling(perf: PerformanceConfig) -> CoolingConfig:
    return CoolingConfig(mode=CoolingMode(perf.cooling), manual_duty_pct=perf.manual_fan_pct, min_fans=perf.min_fans,
                         lifetime_target_c=perf.lifetime_target_c,
                         limits=ThermalLimits(perf.target_c, perf.hot_c, perf.dangerous_c))

WORK_HISTORY = 8192  # issued work items remembered for validating late nonces
MAX_PENDING_SUBMITS = 256  # shares waiting for a pool answer; beyond this new shares are dropped and counted
GOVERNOR_HYSTERESIS = 0.2  # the governor follows the hashrate once it moved by more than this fraction


@dataclass
class _JobContext:
    group: PoolGroup
    conn: PoolConnection
    client: PoolSession
    job: StratumJob
    received_at: float
    difficulty: float  # the pool difficulty when the job arrived: a later change applies to later jobs
    extranonce2: itertools.count[int] = field(default_factory=itertools.count)


@dataclass(frozen=True)
class _IssuedWork:
    ctx: _JobContext
    extranonce1: bytes
    extranonce2: bytes
    item: WorkItem
    share_target: int
    pool_difficulty: float
    validator: WorkValidator


@dataclass
class FoundShare:
    pool_url: str
    extranonce1: bytes
    share: Share
    hash: bytes
    found_at: float
    block_candidate: bool
    result: SubmitResult | None = None  # None until the pool answers (or while queued)
    fate: str = "found"  # then what PoolGroup.submit says became of it (pool_manager.ANSWERED, QUEUED, ...)


@dataclass
class AgentStats:
    started_at: float = field(default_factory=time.time)
    valid_nonces: int = 0
    hardware_errors: int = 0
    expired_nonces: int = 0  # nonces for work the agent no longer remembers
    shares_found: int = 0
    block_candidates: int = 0
    superseded_nonces: int = 0  # found for a block the pool has moved past: dropped, never submitted
    superseded_difficulty: float = 0.0  # the pool difficulty those shares would have been credited at
    dropped_shares: int = 0  # over the submit-queue cap, or queued for a session of a replaced pool configuration
    work_errors: int = 0  # jobs that could not be turned into work (logged)


class MiningAgent:
    """Drives one ``MiningHardware`` against the configured pool groups."""

    def __init__(self, config: AgentConfig, hardware: MiningHardware) -> None:
        self.config = config
        self.hardware = hardware
        self.stats = AgentStats()
        self.found: deque[FoundShare] = deque(maxlen=10_000)
        self.hashrate = HashrateMeter()
        self.expected_hashrate = hardware.expected_hashrate()
        # The share-rate governor's one hashrate figure (see share_hashrate): its difficulty floor, the range the
        # pool sessions judge difficulties by and the suggested start difficulty all come from it.
        self.governor_hashrate = self.expected_hashrate
        self.policy = self._session_policy(self.governor_hashrate, config)
        self.pools = PoolManager(config.groups, config.stratum, f"openmos/{__version__}",
                                 self._on_job, self._on_switch, self.policy)
        self._generation = 0
        self._jobs: dict[str, _JobContext] = {}
        self._work: OrderedDict[int, _IssuedWork] = OrderedDict()
        self._work_ids = itertools.count(1)
        self._advised: dict[str, float] = {}  # the last pool difficulty checked per group
        self._tasks: set[asyncio.Task[None]] = set()
        self._sampler: asyncio.Task[None] | None = None
        self.paused = False
        self.last_scan: ScanReport | None = None
        self.security_events: deque[str] = deque(maxlen=200)
        self._security_task: asyncio.Task[None] | None = None
        self.tuner = self._make_tuner(config.performance)
        self._tuner_task: asyncio.Task[None] | None = None
        self.safety_hold = False  # the safety monitor shut the hardware down
        self.safety = self._make_safety(config.performance)
        self.maintenance = MaintenanceMonitor()  # predictive maintenance on the hardware's telemetry

    @staticmethod
    def _session_policy(hashrate: float | None, config: AgentConfig) -> SessionPolicy:
        """Start difficulty and the accepted difficulty range, from the hardware's expected hashrate."""
        if not hashrate:
            return SessionPolicy()
        tuning = config.stratum
        return SessionPolicy(suggested_difficulty(hashrate),
                             DifficultyRange.for_hashrate(hashrate, tuning.max_share_rate, tuning.slow_share_hours))

    def _make_tuner(self, perf: PerformanceConfig) -> Autotuner | None:
        limits = self.hardware.limits()
        if not perf.enabled:
            return None
        if limits is None:
            raise ValueError(f"{self.hardware.model} has no tunable clocks: remove the performance target")
        target = PerformanceTarget.choose(power_w=perf.power_w, hashrate_ths=perf.hashrate_ths,
                                          profile=perf.profile, nameplate_w=limits.nameplate_power_w or 0.0)
        store = ProfileStore(Path(perf.profile_store)) if perf.profile_store else None
        return Autotuner(self.hardware, target, clock=self.hardware.clock, store=store, cooling=_cooling(perf))

    def _make_safety(self, perf: PerformanceConfig) -> SafetyMonitor | None:
        """Any hardware with sensors gets a safety monitor, with or without a tuner."""
        if not has_sensors(self.hardware.telemetry()):
            return None
        return SafetyMonitor(self.hardware, _cooling(perf), clock=self.hardware.clock,
                             tuner_active=self.tuner_running, on_trip=self._on_safety_trip)

    def tuner_running(self) -> bool:
        """True while an autotuner task is alive (False when there is none, it stopped or it crashed)."""
        return self._tuner_task is not None and not self._tuner_task.done()

    def _tuner_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("autotuner crashed (%s); the safety monitor keeps protecting the hardware",
                      task.exception(), exc_info=task.exception())

    def _on_safety_trip(self, tripped: bool) -> None:
        self.safety_hold = tripped
        self._generation += 1

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.stats.started_at = time.time()
        self.pools.start()
        await self.hardware.start(self, self._on_nonce)
        if self.safety is None:  # boards whose sensors only answer once powered up (BM13xx over USB/UART)
            self.safety = self._make_safety(self.config.performance)
        self._sampler = asyncio.create_task(self._sample_loop(), name="agent-sampler")
        if self.tuner is not None:
            self._tuner_task = asyncio.create_task(self.tuner.run(), name="autotuner")
            self._tuner_task.add_done_callback(self._tuner_done)
        if self.safety is not None:
            self.safety.start()
        if self.config.security.scan_root or self.config.security.desired_pools:
            self._security_task = asyncio.create_task(self._security_loop(), name="security-scan")
        log.info("agent started on %s with %d pool group(s)", self.hardware.model, len(self.pools.groups))

    async def stop(self) -> None:
        await cancel_and_wait(self._security_task)
        if self._tuner_task is not None and self.tuner is not None:
            self.tuner.stop()
            await cancel_and_wait(self._tuner_task)  # a crash was logged when it happened
        if self.safety is not None:
            await self.safety.stop()
        await cancel_and_wait(self._sampler)
        await self.hardware.stop()
        if self._tasks:  # answers to shares in flight: wait briefly, then give up on them
            await asyncio.wait(self._tasks, timeout=3)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pools.stop()
        log.info("agent stopped")

    async def run_security_checks(self) -> ScanReport | None:
        """One scheduled pass: restore tampered pool settings, then scan the filesystem (in a thread)."""
        sec = self.config.security
        if sec.desired_pools and sec.config_path and sec.pubkey:
            envelope = json.loads(Path(sec.desired_pools).read_text())
            restored = enforce_pools(Path(sec.config_path), envelope, Path(sec.pubkey).read_bytes())
            if restored:
                self.security_events.append(restored)
                await self.apply_pools(AgentConfig.load(Path(sec.config_path)))
        if not sec.scan_root:
            return None
        root = Path(sec.scan_root)
        if sec.baseline and sec.pubkey:
            scanner = Scanner.with_signed_baseline(root, json.loads(Path(sec.baseline).read_text()),
                                                   Path(sec.pubkey).read_bytes(), set(sec.declared_endpoints))
        else:
            scanner = Scanner(root, None, set(sec.declared_endpoints))
        report = await asyncio.to_thread(scanner.scan)
        self.last_scan = report
        for f in report.findings:
            if f.severity in ("high", "critical"):
                log.warning("security scan: %s %s at %s: %s", f.severity.upper(), f.check, f.path, f.detail)
        return report

    async def _security_loop(self) -> None:
        while True:
            try:
                await self.run_security_checks()
            except (OSError, ValueError) as exc:  # a broken baseline must not stop mining; say so loudly
                log.error("security check failed: %s", exc)
                self.security_events.append(f"check failed: {exc}")
            await asyncio.sleep(self.config.security.interval_s)

    async def pause(self) -> None:
        """Stop hashing (hardware idles; with a tuner the boards are switched off), keep pool sessions."""
        self.paused = True
        self._generation += 1
        if self.tuner is not None:
            await self.tuner.sleep()
        log.info("mining paused")

    async def resume(self) -> None:
        self.paused = False
        self._generation += 1
        if self.tuner is not None:
            await self.tuner.wake()
        log.info("mining resumed")

    async def apply_pools(self, config: AgentConfig) -> None:
        """Switch to the pool groups of a new configuration (the rest of it applies at the next start)."""
        await self.pools.stop()
        queued = sum(len(c.outbox) for c in self.pools.connections())
        if queued:  # their sessions belong to the old configuration: counted as lost, never silently dropped
            self.stats.dropped_shares += queued
            log.warning("%d share(s) still queued for a pool session are lost with the old pool configuration",
                        queued)
        self.config = config
        self.pools = PoolManager(config.groups, config.stratum, f"openmos/{__version__}", self._on_job,
                                 self._on_switch, self.policy)
        self._jobs.clear()
        self._generation += 1
        self.pools.start()
        log.info("applied new pool configuration (%d group(s))", len(config.groups))

    async def restart(self) -> None:
        """Reconnect every pool group (what cgminer's restart does for the pool side)."""
        await self.pools.stop()
        self._jobs.clear()
        self._generation += 1
        self.pools.start()
        log.info("pool connections restarted")

    async def _sample_loop(self) -> None:
        while True:
            # Hash counters advance in the hardware's time (a simulator may run faster than real time).
            # A whole snapshot only when the health model wants one (every few minutes), else the counters alone.
            now = self.hardware.clock.now()
            if self.maintenance.due(now):
                tel = self.hardware.telemetry()
                self.hashrate.add(now, tel.hashes)
                self.maintenance.observe(tel, now)
            else:
                self.hashrate.add(now, self.hardware.hash_count())
            self.refresh_governor()
            await asyncio.sleep(1.0)

    def telemetry(self) -> HardwareTelemetry:
        return self.hardware.telemetry()

    # -- pool events ------------------------------------------------------------------------------

    def _on_job(self, group: PoolGroup, conn: PoolConnection, client: PoolSession, job: StratumJob) -> None:
        previous = self._jobs.get(group.name)
        self._jobs[group.name] = _JobContext(group, conn, client, job, time.time(), client.difficulty,
                                             conn.extranonce2_counter(client.extranonce1))
        new_block = previous is not None and previous.job.prev_hash != job.prev_hash
        if job.clean_jobs or new_block or previous is None or previous.client is not client:
            self._generation += 1
        if new_block and not job.clean_jobs:
            log.info("%s: new block announced without clean_jobs (job %s); abandoning all older work",
                     conn.url, job.job_id)
        log.debug("new job %s from %s (clean=%s)", job.job_id, conn.url, job.clean_jobs)

    def _on_switch(self, group: PoolGroup) -> None:
        ctx = self._jobs.get(group.name)
        if ctx is not None and (group.active is not ctx.conn or ctx.client.closed.is_set()):
            del self._jobs[group.name]
            self._generation += 1

    # -- WorkProvider -----------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    def next_work(self) -> WorkItem | None:
        if self.paused or self.safety_hold:
            return None
        group = self.pools.pick_group(lambda g: g.name in self._jobs)
        if group is None:
            return None
        ctx = self._jobs[group.name]
        client = ctx.client
        try:
            size = client.extranonce2_size
            en2 = (next(ctx.extranonce2) % (1 << (8 * size))).to_bytes(size, "big")
            # ntime rolls forward with the wall clock, as every miner does; pools accept up to +2 h.
            ntime = min(ctx.job.ntime + max(0, int(time.time() - ctx.received_at)), 0xFFFFFFFF)
            header = ctx.job.header(client.extranonce1, en2, ntime=ntime, nonce=0, version=ctx.job.version)
            difficulty = client.difficulty
            target = difficulty_to_target(self.mining_difficulty(difficulty))
        except (ValueError, OverflowError, ArithmeticError) as exc:  # never let one job stop all hashing
            self.stats.work_errors += 1
            log.error("cannot make work from job %s of %s: %s; dropping that job", ctx.job.job_id, ctx.conn.url,
                      exc)
            del self._jobs[group.name]
            return None
        if self._advised.get(group.name) != difficulty:  # say once per new value when it means a long wait
            self._advised[group.name] = difficulty
            advice = self.difficulty_advice(difficulty)
            if advice is not None:
                log.warning("%s: %s", ctx.conn.url, advice)
        item = WorkItem(next(self._work_ids), self._generation, header, client.version_mask, target)
        # Mined at the current difficulty, credited as pools credit a job sent before a difficulty change
        # (the lower of the two): the agent's accepted difficulty then matches the pool's.
        self._work[item.work_id] = _IssuedWork(ctx, client.extranonce1, en2, item, target,
                                               min(difficulty, ctx.difficulty), WorkValidator(item))
        while len(self._work) > WORK_HISTORY:
            self._work.popitem(last=False)
        return item

    def mining_difficulty(self, pool_difficulty: float) -> float:
        """The difficulty the hardware mines at for this pool difficulty (the share-rate governor's floor),
        from ``governor_hashrate``: the same figure the sessions' ``governed_below`` was computed from."""
        return governed_difficulty(pool_difficulty, self.governor_hashrate, self.config.stratum.max_share_rate)

    def share_hashrate(self) -> float | None:
        """Hashes/s behind the reported nonces: the backend's own figure, else the measured 60 s rate."""
        expected = self.hardware.expected_hashrate()
        if expected:
            return expected
        measured = self.hashrate.rate(60.0)
        return measured or None

    def refresh_governor(self) -> bool:
        """Follow ``share_hashrate`` once it moved by more than GOVERNOR_HYSTERESIS from ``governor_hashrate``
        (a CPU's calibration replaced by its measured rate, a measured rate where the backend gives none):
        floor, difficulty range and suggested difficulty change together. True when it changed."""
        current, held = self.share_hashrate(), self.governor_hashrate
        if not current or (held and abs(current / held - 1.0) <= GOVERNOR_HYSTERESIS):
            return False
        self.governor_hashrate = current
        self.policy = self._session_policy(current, self.config)
        self.pools.set_policy(self.policy)
        return True

    def difficulty_advice(self, difficulty: float) -> str | None:
        """A hint for the operator when the pool's difficulty means a very long wait between shares."""
        rate = self.governor_hashrate
        wait = seconds_per_share(rate, difficulty) if rate else 0.0
        if wait > 3600:
            return (f"pool difficulty {difficulty:g} means one share every {wait / 3600:.1f} h on this hardware; "
                    f"ask for less with --suggest-difficulty (e.g. {suggested_difficulty(rate or 1):g})")
        return None

    # -- nonces -----------------------------------------------------------------------------------

    def _on_nonce(self, result: NonceResult) -> None:
        issued = self._work.get(result.work_id)
        if issued is None:
            self.stats.expired_nonces += 1
            return
        item = issued.item
        try:
            digest = issued.validator.digest(result.nonce, result.version)
        except InvalidNonce as exc:
            self._hardware_error(result, str(exc))
            return
        value = hash_to_int(digest)
        header = BlockHeader(result.version, item.header.prev_hash, item.header.merkle_root,
                             item.header.ntime, item.header.bits, result.nonce)
        self.stats.valid_nonces += 1
        if value > issued.share_target:
            return  # a valid ticket below pool difficulty: counts toward hashrate only
        ctx = issued.ctx
        current = self._jobs.get(ctx.group.name)
        if current is not None and current.conn is ctx.conn and current.job.prev_hash != ctx.job.prev_hash:
            self.stats.superseded_nonces += 1  # the pool has moved to a new block: worthless, never sent
            self.stats.superseded_difficulty += issued.pool_difficulty
            return
        share = Share(ctx.job.job_id, issued.extranonce2, header.ntime, result.nonce, result.version,
                      ctx.job.version, item.version_mask, hash_difficulty(digest), issued.pool_difficulty)
        block = value <= bits_to_target(header.bits)
        found = FoundShare(str(ctx.conn.url), issued.extranonce1, share, digest, time.time(), block)
        self.found.append(found)
        self.stats.shares_found += 1
        if block:
            self.stats.block_candidates += 1
            log.info("block candidate found: %s (pool %s)", header.hash_hex(), ctx.conn.url)
        if len(self._tasks) >= MAX_PENDING_SUBMITS:
            self.stats.dropped_shares += 1
            found.fate = "dropped (submit queue full)"
            return
        task = asyncio.get_running_loop().create_task(self._submit(ctx, issued.extranonce1, found))
        self._tasks.add(task)
        task.add_done_callback(self._submitted)

    def _submitted(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("submitting a share failed: %r", task.exception())

    def _hardware_error(self, result: NonceResult, why: str) -> None:
        self.stats.hardware_errors += 1
        self.hardware.record_error(result.board, result.chip)
        log.debug("hardware error on board %d chip %d: %s", result.board, result.chip, why)

    async def _submit(self, ctx: _JobContext, extranonce1: bytes, found: FoundShare) -> None:
        def fate(what: str, result: SubmitResult | None) -> None:
            found.fate, found.result = what, result

        await ctx.group.submit(ctx.conn, extranonce1, found.share, ctx.job.prev_hash, fate)
