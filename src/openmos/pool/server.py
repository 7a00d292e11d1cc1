"""The local pool's Stratum V1 server.

Every share is validated independently of the miner: the pool rebuilds the coinbase from its own
coinb1/coinb2 and the session's extranonce1, folds its own merkle branch, applies the submitted version
bits under the negotiated mask and hashes the header itself.

Session resumption: ``mining.subscribe`` answers with an unguessable session id (the subscription id of
``mining.notify``). A miner that reconnects within ``resume_window`` seconds and offers it gets the same
extranonce1 back, so the jobs it was mining and the shares it found meanwhile stay valid. A reconnect that
arrives before the pool noticed the old connection die takes the session over (the old connection is
closed). Re-sending, on the resumed session, a share the pool already accepted on an earlier connection of
that session is answered ``true`` again without a second credit: the miner lost the first answer with the
connection, and a share is credited once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openmos.base.logs import LogLimiter
from openmos.base.server import StreamServer
from openmos.base.tasks import cancel_and_wait
from openmos.bitcoin import BlockHeader, difficulty_to_target, hash_difficulty, hash_to_int
from openmos.bitcoin.version import BIP320_MASK
from openmos.pool.chain import BlockTemplate, TemplateChain
from openmos.pool.v1_session import PEER_LOG_BURST, ShareRejected, ShareStats, V1Frontend, V1Session
from openmos.pool.vardiff import VardiffSettings
from openmos.stratum.job import StratumJob
from openmos.stratum.protocol import (
    MAX_LINE_BYTES,
    ProtocolError,
    StratumErrorCode,
)

log = logging.getLogger(__name__)

EXTRANONCE1_SIZE = 4
MAX_WORKERS = 10_000  # distinct worker names the pool keeps statistics for; new names beyond it are refused
MAX_NTIME_DRIFT = 7200  # seconds a share's ntime may run ahead of the pool clock (consensus rule)


@dataclass(frozen=True)
class PoolSettings:
    host: str = "127.0.0.1"
    port: int = 3333  # 0 picks a free port
    start_difficulty: float = 0.001
    vardiff: VardiffSettings | None = field(default_factory=VardiffSettings)
    network_difficulty: float = 0.05
    version_mask: int = BIP320_MASK
    extranonce2_size: int = 4
    job_interval: float = 30.0
    max_jobs: int = 32
    idle_timeout: float = 900.0
    max_connections: int = 10_000  # beyond this, new connections are closed at once (19,900 idle ones held 247 MB)
    password: str | None = None  # None: any password is accepted (local pool)
    recent_shares: int = 10_000
    tls_cert: str | None = None  # PEM certificate chain: serve stratum+ssl instead of plain TCP
    tls_key: str | None = None
    resume_window: float = 300.0  # seconds a disconnected session can be resumed with its session id


@dataclass
class WorkerStats(ShareStats):
    blocks: int = 0


@dataclass(frozen=True)
class AcceptedShare:
    worker: str
    job_id: str
    extranonce1: bytes
    extranonce2: bytes
    ntime: int
    nonce: int
    version: int
    hash: bytes
    header: bytes  # the 80-byte header the pool hashed, so anyone can re-verify the share
    difficulty: float  # achieved
    target_difficulty: float  # required
    is_block: bool


@dataclass
class _Job:
    job_id: str
    template: BlockTemplate
    stratum: StratumJob


PoolJob = _Job  # what other front ends (the Stratum V2 server) see of a job


@dataclass(eq=False)
class _Session(V1Session):
    extranonce1: bytes = b""
    serial: int = 0  # this connection's number (a resumed session gets a new one)
    session_id: str = ""  # the resumption token handed out at subscribe
    taken_over: bool = False  # a reconnect of the same session replaced this connection


class LocalPool(V1Frontend[_Session]):
    """A Stratum V1 pool on a local template chain. ``await start()``; ``await stop()``."""

    name = "pool"
    free_difficulty_range = (0.0, float("inf"))

    def __init__(self, settings: PoolSettings | None = None, chain: TemplateChain | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or PoolSettings()
        self.chain = chain or TemplateChain(network_difficulty=self.settings.network_difficulty,
                                            extranonce_size=EXTRANONCE1_SIZE + self.settings.extranonce2_size,
                                            clock=clock)
        self.clock = clock
        self.workers: dict[str, WorkerStats] = {}
        self.accepted: deque[AcceptedShare] = deque(maxlen=self.settings.recent_shares)
        self.rejections: dict[str, int] = {}
        self.protocol_errors = 0
        self.peer_log = LogLimiter(log, burst=PEER_LOG_BURST)
        self.blocks_found: list[AcceptedShare] = []
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        # per job: every accepted share -> the connection serial that sent it (0: another front end)
        self._seen: dict[str, dict[tuple[bytes, bytes, int, int, int], int]] = {}
        self._sessions: set[_Session] = set()
        self._active_en1: set[bytes] = set()
        self._resumable: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # id -> (en1, expiry)
        self._owners: dict[str, _Session] = {}  # session id -> the connection using it now
        self._serials = itertools.count(1)
        self.resumed_sessions = 0
        self.replayed_shares = 0  # re-sent on a resumed session after the pool had accepted them: not re-credited
        self._en1_counter = itertools.count(1)
        self._job_counter = itertools.count(1)
        self._current_id = ""  # the newest pool-made job (custom jobs never become it)
        self._listener = StreamServer(self._handle, max_connections=self.settings.max_connections)
        self._job_task: asyncio.Task[None] | None = None
        self.port = self.settings.port
        self.job_listeners: list[Callable[[PoolJob], None]] = []  # other front ends (Stratum V2)
        self.share_listeners: list[Callable[[AcceptedShare, PoolJob], None]] = []  # e.g. a proxy forwarding up

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._current_id not in self._jobs:
            self._new_job(clean=True)
        ctx = None
        if self.settings.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        self.port = await self._listener.start(self.settings.host, self.port, limit=MAX_LINE_BYTES,
                                               reuse_address=True, ssl=ctx)
        self._job_task = asyncio.create_task(self._job_loop(), name="pool-jobs")
        log.info("local pool listening on stratum+tcp://%s:%d (share diff %g, network diff %g)",
                 self.settings.host, self.port, self.settings.start_difficulty, self.chain.network_difficulty)

    @property
    def serving(self) -> bool:
        return self._listener.serving

    @property
    def url(self) -> str:
        scheme = "stratum+ssl" if self.settings.tls_cert else "stratum+tcp"
        return f"{scheme}://{self.settings.host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and drop every connection. State (chain, jobs, sessions) survives a restart."""
        await cancel_and_wait(self._job_task)
        await self._listener.stop()
        self._job_task = None

    async def _job_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_interval)
            self._new_job(clean=False)
            self._broadcast_job()

    # -- jobs -------------------------------------------------------------------------------------

    def _new_job(self, *, clean: bool) -> _Job:
        template = self.chain.template()
        job_id = f"{next(self._job_counter):x}"
        stratum = StratumJob(job_id, template.prev_hash, template.coinb1, template.coinb2,
                             template.merkle_branch, template.version, template.bits, template.ntime, clean)
        if clean:
            self._jobs.clear()
            self._seen.clear()
        job = _Job(job_id, template, stratum)
        self._jobs[job_id] = job
        self._seen[job_id] = {}
        self._current_id = job_id
        self._trim_jobs()
        return job

    def add_custom_job(self, template: BlockTemplate) -> PoolJob:
        """A job whose template a miner declared (SetCustomMiningJob): validated and accounted like ours."""
        job_id = f"{next(self._job_counter):x}"
        stratum = StratumJob(job_id, template.prev_hash, template.coinb1, template.coinb2,
                             template.merkle_branch, template.version, template.bits, template.ntime, False)
        job = _Job(job_id, template, stratum)
        self._jobs[job_id] = job
        self._seen[job_id] = {}
        self._trim_jobs()
        return job

    def _trim_jobs(self) -> None:
        while len(self._jobs) > self.settings.max_jobs:
            old = next(k for k in self._jobs if k != self._current_id)
            del self._jobs[old]
            self._seen.pop(old, None)

    def _current_job(self) -> _Job:
        return self._jobs[self._current_id]

    def current_job(self) -> PoolJob:
        if self._current_id not in self._jobs:
            self._new_job(clean=True)
        return self._current_job()

    def find_job(self, job_id: str) -> PoolJob | None:
        return self._jobs.get(job_id)

    def new_extranonce1(self) -> bytes:
        """A fresh extranonce1, unique across every front end of this pool."""
        en1 = next(self._en1_counter).to_bytes(EXTRANONCE1_SIZE, "big")
        self._active_en1.add(en1)
        return en1

    def release_extranonce1(self, en1: bytes) -> None:
        self._active_en1.discard(en1)

    def register_worker(self, worker: str) -> WorkerStats:
        """A worker's statistics; the front ends refuse new names once ``MAX_WORKERS`` are known."""
        return self.workers.setdefault(worker, WorkerStats())

    def has_room_for(self, worker: str) -> bool:
        return worker in self.workers or len(self.workers) < MAX_WORKERS

    def _broadcast_job(self) -> None:
        job = self._current_job()
        for session in self._sessions:
            if session.subscribed and session.workers:
                self._maybe_retarget(session, self.clock())
                self._send_job(session, job)
        for listener in self.job_listeners:
            listener(job)

    # -- connection handling ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        session = _Session(peer, writer, difficulty=self.settings.start_difficulty, serial=next(self._serials))
        self._sessions.add(session)
        self.peer_log.log(logging.INFO, "connected", "pool: miner connected from %s", peer)
        try:
            await self._serve_v1(session, reader, self.settings.idle_timeout)
        finally:
            self._sessions.discard(session)
            if session.extranonce1 and not session.taken_over:
                self._active_en1.discard(session.extranonce1)
                self._owners.pop(session.session_id, None)
                self._resumable[session.session_id] = (session.extranonce1, self.clock() + self.settings.resume_window)
                self._expire_resumable()
            writer.close()
            self.peer_log.log(logging.INFO, "disconnected", "pool: miner %s disconnected", peer)

    # -- the V1 front end's hooks -------------------------------------------------------------------

    def _vardiff(self) -> VardiffSettings | None:
        return self.settings.vardiff

    def _now(self) -> float:
        return self.clock()

    def _max_jobs(self) -> int:
        return self.settings.max_jobs

    def _allowed_version_mask(self) -> int:
        return self.settings.version_mask

    def _job_after_authorize(self) -> _Job:
        return self._current_job()

    def _expire_resumable(self) -> None:
        now = self.clock()
        while self._resumable:
            key, (_, expiry) = next(iter(self._resumable.items()))
            if expiry > now and len(self._resumable) <= 10_000:
                break
            del self._resumable[key]

    def _resume(self, session: _Session, token: str) -> bytes | None:
        """The extranonce1 of session ``token`` if it can be resumed by this connection, else None."""
        self._expire_resumable()
        if token in self._resumable:
            return self._resumable.pop(token)[0]
        owner = self._owners.get(token)
        if owner is None or owner is session:
            return None
        # The old connection is still open here (its end has not reached us yet): the token holder is back.
        owner.taken_over = True
        owner.writer.close()
        self._sessions.discard(owner)
        return owner.extranonce1

    def _on_subscribe(self, session: _Session, params: list[Any]) -> list[Any]:
        if session.subscribed:
            raise ProtocolError("already subscribed")
        token = params[1] if len(params) > 1 and isinstance(params[1], str) and len(params[1]) <= 64 else None
        en1 = self._resume(session, token) if token else None
        if en1 is None:
            en1 = self.new_extranonce1()
            token = secrets.token_hex(8)
        else:
            self.resumed_sessions += 1
            log.info("pool: %s resumed session %s (extranonce1 %s)", session.peer, token, en1.hex())
        assert token is not None
        self._active_en1.add(en1)
        self._owners[token] = session
        session.extranonce1, session.session_id = en1, token
        session.subscribed = True
        session.window_start = self.clock()
        return [[["mining.set_difficulty", token], ["mining.notify", token]], en1.hex(),
                self.settings.extranonce2_size]

    def _on_authorize(self, session: _Session, params: list[Any]) -> bool:
        if self.settings.password is not None:
            password = params[1] if len(params) > 1 else None
            if password != self.settings.password:
                raise ShareRejected(StratumErrorCode.UNAUTHORIZED, "wrong password")
        name = params[0] if params else None
        if isinstance(name, str) and not self.has_room_for(name):
            raise ShareRejected(StratumErrorCode.UNAUTHORIZED, "the pool has no room for another worker")
        self.register_worker(self._authorize_worker(session, params))
        return True

    # -- shares -----------------------------------------------------------------------------------

    def _reject(self, worker: str, stats: WorkerStats | None, code: StratumErrorCode, why: str) -> ShareRejected:
        self.count_rejection(why)
        if stats is not None:
            stats.record_refused(code)
        return ShareRejected(code, why)

    def count_rejection(self, why: str) -> None:
        """Count a refused share by its reason, without the details in parentheses (the miner gets those): keyed
        by the whole message, every low-difficulty share added an entry of its own, for ever."""
        key = why.split(" (", 1)[0]
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def _refuse_share(self, session: _Session, worker: str | None, code: StratumErrorCode,
                      why: str) -> ShareRejected:
        return self._reject(worker or "", self.workers.get(worker) if worker else None, code, why)

    def _on_submit(self, session: _Session, params: list[Any], received: float = 0.0) -> bool:
        worker = self._submit_worker(session, params)
        stats = self.workers[worker]
        job_id = params[1]
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise self._reject(worker, stats, StratumErrorCode.JOB_NOT_FOUND, "job not found (stale)")
        en2, ntime, nonce, version = self._submit_fields(session, worker, params, self.settings.extranonce2_size,
                                                         job.template.version)
        required = self._required_difficulty(session, job.job_id)
        key = (session.extranonce1, en2, ntime, nonce, version)
        first = self._seen[job.job_id].get(key)
        if first not in (None, 0, session.serial):
            # accepted on an earlier connection of this resumed session (the key holds its extranonce1);
            # the answer was lost with that connection
            self._seen[job.job_id][key] = session.serial
            self.replayed_shares += 1
            return True
        share = self.accept_share(worker, stats, job, session.extranonce1, en2, ntime, nonce, version, required,
                                  connection=session.serial)
        session.window_shares += 1
        if not share.is_block:
            self._maybe_retarget(session, self.clock())
        return True

    def accept_share(self, worker: str, stats: WorkerStats, job: PoolJob, en1: bytes, en2: bytes, ntime: int,
                     nonce: int, version: int, required: float, merkle_root: bytes | None = None,
                     connection: int = 0) -> AcceptedShare:
        """Validate one share of any front end (header rebuilt and hashed here); ShareRejected says why.

        ``merkle_root``: the root this pool computed for (job, en1 + en2) when it sent a header-only job
        (Stratum V2 standard channels), so the coinbase is not hashed again per share."""
        if ntime < job.template.ntime or ntime > self.clock() + MAX_NTIME_DRIFT:
            raise self._reject(worker, stats, StratumErrorCode.OTHER, "ntime out of range")
        key = (en1, en2, ntime, nonce, version)
        seen = self._seen[job.job_id]
        if key in seen:
            raise self._reject(worker, stats, StratumErrorCode.DUPLICATE_SHARE, "duplicate share")
        if merkle_root is None:
            header = job.stratum.header(en1, en2, ntime=ntime, nonce=nonce, version=version)
        else:
            header = BlockHeader(version, job.stratum.prev_hash, merkle_root, ntime, job.stratum.nbits, nonce)
        digest = header.hash()
        if hash_to_int(digest) > difficulty_to_target(required):
            raise self._reject(worker, stats, StratumErrorCode.LOW_DIFFICULTY,
                               f"low difficulty share ({hash_difficulty(digest):.6g} < {required:.6g})")
        seen[key] = connection
        now = self.clock()
        achieved = hash_difficulty(digest)
        stats.record_accepted(required, achieved, now)
        is_block = hash_to_int(digest) <= job.template.target
        share = AcceptedShare(worker, job.job_id, en1, en2, ntime, nonce, version, digest,
                              header.serialize(), achieved, required, is_block)
        self.accepted.append(share)
        for listener in self.share_listeners:
            listener(share, job)
        if is_block:
            self._found_block(share, header)
        return share

    def _found_block(self, share: AcceptedShare, header: BlockHeader) -> None:
        if not self.chain.submit_block(header):
            return
        self.workers[share.worker].blocks += 1
        self.blocks_found.append(share)
        log.info("pool: BLOCK %d found by %s: %s", self.chain.height - 1, share.worker, header.hash_hex())
        # Announce the new tip to everyone (after the current reply is queued).
        asyncio.get_running_loop().call_soon(self._new_tip)

    def _new_tip(self) -> None:
        self._new_job(clean=True)
        self._broadcast_job()

    def new_tip(self) -> None:
        """The chain moved by another route (the node RPC's submitblock): clean jobs to every front end."""
        self._new_tip()

    def push_job(self, *, clean: bool) -> None:
        """A new job from the chain's current template to every front end now (``clean``: drop older jobs)."""
        self._new_job(clean=clean)
        self._broadcast_job()
