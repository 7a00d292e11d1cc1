"""The farm proxy: Stratum V1 miners downstream, one encrypted Stratum V2 extended channel upstream.

Extranonce space: the upstream channel grants ``extranonce_prefix`` and ``extranonce_size`` bytes; each
downstream gets ``extranonce1 = prefix + local id`` (``local_extranonce_bytes``) and rolls the rest as its
extranonce2, so no two miners ever search the same space. Every share is validated here -- header rebuilt
from the job, version bits inside the negotiated mask, ntime window, duplicates, the downstream's own
vardiff target -- before it is forwarded (as ``SubmitSharesExtended``) when it also meets the upstream
target. Upstream pools are tried in order; on failover the downstreams that asked for
``mining.extranonce.subscribe`` get the new extranonce1, the others are disconnected to reconnect.
Per-downstream statistics are kept for the APIs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from openmos.base.logs import LogLimiter
from openmos.base.server import StreamServer
from openmos.base.tasks import cancel_and_wait
from openmos.bitcoin import BIP320_MASK, difficulty_to_target, hash_difficulty, hash_to_int
from openmos.pool.v1_session import PEER_LOG_BURST, ShareRejected, ShareStats, V1Frontend, V1Session
from openmos.pool.vardiff import VardiffSettings
from openmos.proxy.upstream import ActiveJob, Upstream, UpstreamUnavailable
from openmos.stratum.job import StratumJob
from openmos.stratum.protocol import (
    MAX_LINE_BYTES,
    ProtocolError,
    StratumErrorCode,
    encode_notification,
)
from openmos.stratum.v2.url import Sv2PoolUrl

log = logging.getLogger(__name__)

MAX_NTIME_DRIFT = 7200
MAX_JOBS = 16
LATENCY_SAMPLES = 100_000


@dataclass(frozen=True)
class ProxySettings:
    upstreams: tuple[str, ...]  # stratum2+tcp://host:port/AUTHORITY_PUBKEY, in priority order
    user: str = "openmos.proxy"  # upstream user identity (the farm's account)
    host: str = "127.0.0.1"
    port: int = 3334  # 0 picks a free port
    start_difficulty: float = 0.001
    vardiff: VardiffSettings | None = field(default_factory=VardiffSettings)
    local_extranonce_bytes: int = 2  # per-downstream id bytes carved from the upstream extranonce
    min_downstream_extranonce2: int = 2
    version_mask: int = BIP320_MASK
    retry_delay: float = 2.0
    idle_timeout: float = 900.0
    max_downstreams: int = 4096
    connect_timeout: float = 10.0
    allowed_reconnect_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("the proxy needs at least one stratum2+tcp:// upstream pool")
        for url in self.upstreams:
            Sv2PoolUrl.parse(url)
        if not 1 <= self.local_extranonce_bytes <= 4:
            raise ValueError("local extranonce bytes must be 1..4")


@dataclass
class DownstreamStats(ShareStats):
    peer: str = field(kw_only=True)
    connected_at: float = field(default_factory=time.time)
    worker: str = ""
    extranonce1: str = ""
    difficulty: float = 0.0
    forwarded: int = 0
    upstream_accepted: int = 0
    upstream_rejected: int = 0
    connected: bool = True


@dataclass(frozen=True)
class _Job:
    job_id: str
    upstream_job_id: int
    stratum: StratumJob
    upstream: Upstream


@dataclass(eq=False)
class _Downstream(V1Session):
    local_id: bytes = b""
    stats: DownstreamStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = DownstreamStats(peer=self.peer)


class FarmProxy(V1Frontend[_Downstream]):
    """``await start()``; ``await stop()``. ``downstreams`` and ``history`` hold the statistics."""

    name = "proxy"
    free_difficulty_range = (1e-9, 1e15)

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.urls = [Sv2PoolUrl.parse(u) for u in settings.upstreams]
        self.upstream: Upstream | None = None
        self.upstream_index: int | None = None
        self.upstream_switches = 0
        self.upstream_errors: dict[str, str] = {}
        self.downstreams: set[_Downstream] = set()
        self.history: deque[DownstreamStats] = deque(maxlen=1000)  # disconnected downstreams
        self.forward_latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)  # seconds, submit line -> upstream
        self.protocol_errors = 0
        self.peer_log = LogLimiter(log, burst=PEER_LOG_BURST)
        self.port = settings.port
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._seen: dict[str, set[tuple[bytes, bytes, int, int, int]]] = {}
        self._in_flight: OrderedDict[int, DownstreamStats] = OrderedDict()
        self._free_ids: list[int] = []
        self._next_id = itertools.count(1)
        self._generation = itertools.count(1)
        # Beyond max_downstreams connections are closed at once, counted and logged once per 1,000 (a line per
        # refused connection let a flood past the cap write 904 lines for 904 connections).
        self._listener = StreamServer(self._handle, max_connections=self.settings.max_downstreams)
        self._supervisor: asyncio.Task[None] | None = None
        self._upstream_ready = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.port = await self._listener.start(self.settings.host, self.port, limit=MAX_LINE_BYTES,
                                               reuse_address=True)
        self._supervisor = asyncio.create_task(self._supervise(), name="proxy-upstream-supervisor")
        log.info("proxy: Stratum V1 miners connect to stratum+tcp://%s:%d", self.settings.host, self.port)

    @property
    def url(self) -> str:
        return f"stratum+tcp://{self.settings.host}:{self.port}"

    async def wait_upstream(self, timeout: float) -> None:
        await asyncio.wait_for(self._upstream_ready.wait(), timeout)

    async def stop(self) -> None:
        await cancel_and_wait(self._supervisor)
        await self._listener.stop()
        if self.upstream is not None:
            await self.upstream.close("proxy stopping")

    # -- upstream ---------------------------------------------------------------------------------

    def _min_extranonce(self) -> int:
        return self.settings.local_extranonce_bytes + self.settings.min_downstream_extranonce2

    async def _supervise(self) -> None:
        while True:
            up = await self._connect_first()
            if up is None:
                await asyncio.sleep(self.settings.retry_delay)
                continue
            await up.closed.wait()
            self._upstream_ready.clear()
            log.warning("proxy: upstream %s lost (%s); failing over", up.url, up.close_reason)
            self.upstream_errors[str(up.url)] = up.close_reason

    async def _connect_first(self) -> Upstream | None:
        for index, url in enumerate(self.urls):
            up = Upstream(url, self.settings.user, self._min_extranonce(),
                          version_rolling=self.settings.version_mask != 0, timeout=self.settings.connect_timeout,
                          on_job=self._on_job, on_prefix=lambda _p: self._reassign_extranonces(),
                          on_answer=self._on_answer)
            try:
                await up.open()
            except UpstreamUnavailable as exc:
                self.upstream_errors[str(url)] = str(exc)
                log.warning("proxy: upstream %s unavailable: %s", url, exc)
                continue
            switched = self.upstream is not None
            self.upstream, self.upstream_index = up, index
            self.upstream_switches += switched
            self._jobs.clear()
            self._seen.clear()
            self._reassign_extranonces()
            self._upstream_ready.set()
            self._report_hashrate()
            return up
        return None

    def _reassign_extranonces(self) -> None:
        """A new upstream (or prefix): tell each downstream its new extranonce1, or make it reconnect."""
        for d in list(self.downstreams):
            if not d.subscribed:
                continue
            if d.extranonce_updates and self.upstream is not None:
                d.send(encode_notification("mining.set_extranonce", [self._extranonce1(d).hex(),
                                                                     self._extranonce2_size()]))
                d.stats.extranonce1 = self._extranonce1(d).hex()
            else:
                d.writer.close()

    def _extranonce1(self, d: _Downstream) -> bytes:
        up = self.upstream
        return (up.extranonce_prefix if up is not None else b"") + d.local_id

    def _extranonce2_size(self) -> int:
        up = self.upstream
        return (up.extranonce_size if up is not None else self._min_extranonce()) - len(self._local_bytes())

    def _local_bytes(self) -> bytes:
        return bytes(self.settings.local_extranonce_bytes)

    def _on_job(self, active: ActiveJob) -> None:
        up = self.upstream
        if up is None:
            return
        j = active.job
        job_id = f"{next(self._generation):x}"
        stratum = StratumJob(job_id, active.prev_hash, j.coinbase_tx_prefix, j.coinbase_tx_suffix, j.merkle_path,
                             j.version, active.nbits, active.ntime, active.clean)
        if active.clean:
            self._jobs.clear()
            self._seen.clear()
        self._jobs[job_id] = _Job(job_id, j.job_id, stratum, up)
        self._seen[job_id] = set()
        while len(self._jobs) > MAX_JOBS:
            old, _ = self._jobs.popitem(last=False)
            self._seen.pop(old, None)
        for d in list(self.downstreams):
            if d.subscribed and d.workers:
                self._maybe_retarget(d, time.time())
                self._send_job(d, self._jobs[job_id])

    def _on_answer(self, seq: int, accepted: bool, code: str) -> None:
        stats = self._in_flight.pop(seq, None)
        if stats is None:
            return
        if accepted:
            stats.upstream_accepted += 1
        else:
            stats.upstream_rejected += 1
            log.info("proxy: upstream rejected a share from %s: %s", stats.worker or stats.peer, code)

    def _report_hashrate(self) -> None:
        # A proxy aggregating channels MUST keep the upstream informed (sv2-spec 5.3.7, 5.3.9).
        if self.upstream is not None:
            now = time.time()
            self.upstream.update_channel(sum(d.stats.hashrate(now) for d in self.downstreams))

    # -- downstream connections ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        d = _Downstream(peer, writer, difficulty=self.settings.start_difficulty)
        self.downstreams.add(d)
        try:
            await self._serve_v1(d, reader, self.settings.idle_timeout)
        finally:
            self.downstreams.discard(d)
            d.stats.connected = False
            self.history.append(d.stats)
            if d.local_id:
                self._free_ids.append(int.from_bytes(d.local_id, "big"))
            writer.close()
            self._report_hashrate()

    # -- the V1 front end's hooks -------------------------------------------------------------------

    def _vardiff(self) -> VardiffSettings | None:
        return self.settings.vardiff

    def _max_jobs(self) -> int:
        return MAX_JOBS

    def _allowed_version_mask(self) -> int:
        up = self.upstream
        return self.settings.version_mask if up is None or up.version_rolling_allowed else 0

    def _difficulty_changed(self, d: _Downstream, difficulty: float) -> None:
        d.stats.difficulty = difficulty

    def _on_subscribe(self, d: _Downstream, params: list[Any]) -> list[Any]:
        if d.subscribed:
            raise ProtocolError("already subscribed")
        if self.upstream is None or self.upstream.closed.is_set():
            raise ShareRejected(StratumErrorCode.OTHER, "no upstream pool available yet; retry shortly")
        n = self.settings.local_extranonce_bytes
        local = self._free_ids.pop() if self._free_ids else next(self._next_id)
        if local >= 1 << (8 * n):
            raise ShareRejected(StratumErrorCode.OTHER, "proxy extranonce space exhausted")
        d.local_id = local.to_bytes(n, "big")
        d.subscribed = True
        d.window_start = time.time()
        en1 = self._extranonce1(d)
        d.stats.extranonce1 = en1.hex()
        return [[["mining.set_difficulty", en1.hex()], ["mining.notify", en1.hex()]], en1.hex(),
                self._extranonce2_size()]

    def _on_authorize(self, d: _Downstream, params: list[Any]) -> bool:
        d.stats.worker = self._authorize_worker(d, params)
        d.stats.difficulty = d.difficulty
        return True

    # -- shares -----------------------------------------------------------------------------------

    def _reject(self, d: _Downstream, code: StratumErrorCode, why: str) -> ShareRejected:
        d.stats.record_refused(code)
        return ShareRejected(code, why)

    def _refuse_share(self, d: _Downstream, worker: str | None, code: StratumErrorCode, why: str) -> ShareRejected:
        return ShareRejected(code, why) if worker is None else self._reject(d, code, why)

    def _on_submit(self, d: _Downstream, params: list[Any], received: float) -> bool:
        worker = self._submit_worker(d, params)
        job = self._jobs.get(params[1]) if isinstance(params[1], str) else None
        up = self.upstream
        if job is None or up is None or job.upstream is not up or up.closed.is_set():
            raise self._reject(d, StratumErrorCode.JOB_NOT_FOUND, "job not found (stale)")
        en2, ntime, nonce, version = self._submit_fields(d, worker, params, self._extranonce2_size(),
                                                         job.stratum.version)
        if ntime < job.stratum.ntime or ntime > time.time() + MAX_NTIME_DRIFT:
            raise self._reject(d, StratumErrorCode.OTHER, "ntime out of range")
        en1 = self._extranonce1(d)
        key = (en1, en2, ntime, nonce, version)
        seen = self._seen[job.job_id]
        if key in seen:
            raise self._reject(d, StratumErrorCode.DUPLICATE_SHARE, "duplicate share")
        digest = job.stratum.header(en1, en2, ntime=ntime, nonce=nonce, version=version).hash()
        value = hash_to_int(digest)
        required = self._required_difficulty(d, job.job_id)
        if value > difficulty_to_target(required):
            raise self._reject(d, StratumErrorCode.LOW_DIFFICULTY,
                               f"low difficulty share ({hash_difficulty(digest):.6g} < {required:.6g})")
        seen.add(key)
        now = time.time()
        s = d.stats
        s.record_accepted(required, hash_difficulty(digest), now)
        d.window_shares += 1
        if value <= up.target:  # worth something upstream: forward it now
            seq = up.submit(job.upstream_job_id, nonce, ntime, version, d.local_id + en2)
            self.forward_latency.append(time.perf_counter() - received)
            s.forwarded += 1
            self._in_flight[seq] = s
            while len(self._in_flight) > 65_536:
                self._in_flight.popitem(last=False)
        self._maybe_retarget(d, time.time())
        return True

    # -- statistics -------------------------------------------------------------------------------

    def stats(self) -> list[DownstreamStats]:
        """Connected downstreams first, then recently disconnected ones."""
        return [d.stats for d in self.downstreams] + list(self.history)
