"""The server side of Stratum V1 connections, shared by the local pool and the farm proxy.

``V1Frontend`` reads each connection's lines (idle timeout, over-long lines, a limit of malformed messages),
answers ``mining.configure`` (version rolling inside the mask the owner allows), ``mining.suggest_difficulty``
(after authorize, a changed value is announced with ``mining.set_difficulty`` for the jobs that follow)
and ``mining.extranonce.subscribe`` itself, and hands ``mining.subscribe``, ``mining.authorize`` and
``mining.submit`` to its owner. It keeps each connection's share difficulty: a retarget (vardiff) rides on the
next ``mining.notify``, and a share on a job sent before it stays acceptable at ``min(old, new)``.
``_submit_worker`` / ``_submit_fields`` read a submitted share (a worker authorised on this connection,
extranonce2 of the agreed size, version bits inside the negotiated mask); what it is worth is the owner's call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from openmos.base.logs import LogLimiter
from openmos.bitcoin.version import apply_version_bits
from openmos.pool.vardiff import VardiffSettings, next_difficulty
from openmos.stratum.job import StratumJob
from openmos.stratum.protocol import (
    Notification,
    ProtocolError,
    Request,
    StratumErrorCode,
    encode_notification,
    encode_response,
    error_triple,
    hex_field,
    parse_message,
    read_line,
    u32_field,
)

log = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 10  # a client sending this many unparseable lines is disconnected
MAX_WORKERS_PER_CONNECTION = 64  # distinct worker names one connection may authorise
PEER_LOG_BURST = 20  # lines of one kind about connections per 10 s; then a count of those held back
AUTHORIZE_WITHIN_S = 30.0  # a connection with no authorised worker by then is closed (idle ones held sockets)
MAX_WORKER_NAME = 256


class ShareRejected(Exception):
    """A request refused with a Stratum error code (sent back to the miner)."""

    def __init__(self, code: StratumErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ShareStats:
    """Shares of one worker or connection as the server verified them."""

    accepted: int = 0
    rejected: int = 0
    stale: int = 0
    duplicate: int = 0
    accepted_difficulty: float = 0.0
    best_difficulty: float = 0.0
    first_share: float = 0.0
    last_share: float = 0.0

    def hashrate(self, now: float | None = None) -> float:
        """Verified hashrate (H/s) from accepted difficulty since the first share."""
        now = time.time() if now is None else now
        elapsed = now - self.first_share if self.first_share else 0.0
        return self.accepted_difficulty * 2**32 / elapsed if elapsed > 0 else 0.0

    def record_accepted(self, required: float, achieved: float, now: float) -> None:
        self.accepted += 1
        self.accepted_difficulty += required
        self.best_difficulty = max(self.best_difficulty, achieved)
        self.first_share = self.first_share or now
        self.last_share = now

    def record_refused(self, code: StratumErrorCode) -> None:
        if code == StratumErrorCode.JOB_NOT_FOUND:
            self.stale += 1
        elif code == StratumErrorCode.DUPLICATE_SHARE:
            self.duplicate += 1
        else:
            self.rejected += 1


@dataclass(eq=False)
class V1Session:
    """One miner's connection."""

    peer: str
    writer: asyncio.StreamWriter
    subscribed: bool = False
    extranonce_updates: bool = False  # asked for mining.set_extranonce
    workers: set[str] = field(default_factory=set)
    version_mask: int = 0
    difficulty: float = 0.0
    job_difficulty: dict[str, float] = field(default_factory=dict)  # job id -> difficulty when it was sent
    window_start: float = 0.0
    window_shares: int = 0
    bad_messages: int = 0

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class V1Job(Protocol):
    @property
    def job_id(self) -> str: ...

    @property
    def stratum(self) -> StratumJob: ...


S = TypeVar("S", bound=V1Session)


class V1Frontend(Generic[S]):
    """Base of a Stratum V1 server. The owner sets ``_jobs`` (job id -> job, newest last) and implements the
    ``_on_subscribe`` / ``_on_authorize`` / ``_on_submit`` hooks, ``_vardiff``, ``_max_jobs``,
    ``_allowed_version_mask`` and ``_refuse_share``."""

    name: ClassVar[str]  # in log lines
    free_difficulty_range: ClassVar[tuple[float, float]]  # what a miner may suggest when there is no vardiff
    protocol_errors: int
    peer_log: LogLimiter  # lines about connections: a peer opening thousands must not flood the log
    _jobs: OrderedDict[str, Any]

    # -- what the owner decides -------------------------------------------------------------------

    def _vardiff(self) -> VardiffSettings | None:
        raise NotImplementedError

    def _now(self) -> float:
        """The clock of the vardiff window (``_maybe_retarget`` is given the same clock's time)."""
        return time.time()

    def _max_jobs(self) -> int:
        raise NotImplementedError

    def _allowed_version_mask(self) -> int:
        raise NotImplementedError

    def _on_subscribe(self, session: S, params: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _on_authorize(self, session: S, params: list[Any]) -> bool:
        raise NotImplementedError

    def _on_submit(self, session: S, params: list[Any], received: float) -> bool:
        raise NotImplementedError

    def _refuse_share(self, session: S, worker: str | None, code: StratumErrorCode, why: str) -> ShareRejected:
        """Count a refused share (``worker`` None: not an authorised worker) and return the error to raise."""
        raise NotImplementedError

    def _authorize_worker(self, session: S, params: list[Any]) -> str:
        """The worker name of a ``mining.authorize``, checked and added to the connection's workers: a non-empty
        string without control characters (names reach logs and terminal tables), at most
        ``MAX_WORKERS_PER_CONNECTION`` distinct names per connection (a flood of names held memory for ever).
        The password is the owner's to check."""
        name = params[0] if params else None
        if not isinstance(name, str) or not name or len(name) > MAX_WORKER_NAME:
            raise ShareRejected(StratumErrorCode.UNAUTHORIZED, "worker name must be a non-empty string")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise ShareRejected(StratumErrorCode.UNAUTHORIZED, "worker name must not contain control characters")
        if not session.subscribed:
            raise ShareRejected(StratumErrorCode.NOT_SUBSCRIBED, "subscribe before authorizing")
        if name not in session.workers and len(session.workers) >= MAX_WORKERS_PER_CONNECTION:
            raise ShareRejected(StratumErrorCode.UNAUTHORIZED,
                                f"at most {MAX_WORKERS_PER_CONNECTION} workers per connection")
        session.workers.add(name)
        return name

    def _job_after_authorize(self) -> V1Job | None:
        """The job a newly authorised worker starts on."""
        return next(reversed(self._jobs.values())) if self._jobs else None

    def _difficulty_changed(self, session: S, difficulty: float) -> None:
        """A retarget (vardiff) or a suggestion after authorize set the connection's difficulty."""

    # -- the connection ---------------------------------------------------------------------------

    async def _serve_v1(self, session: S, reader: asyncio.StreamReader, idle_timeout: float) -> None:
        """Read and answer ``session``'s requests until it closes, idles, or sends too much garbage."""
        peer = session.peer
        loop = asyncio.get_running_loop()
        authorize_by = loop.time() + AUTHORIZE_WITHIN_S
        try:
            while True:
                waiting = not session.workers  # miners authorise at once; a socket that does not is let go
                timeout = min(idle_timeout, authorize_by - loop.time()) if waiting else idle_timeout
                try:
                    line = await asyncio.wait_for(read_line(reader), max(timeout, 0.0))
                except TimeoutError:
                    if waiting:
                        self.peer_log.log(logging.INFO, "unauthorised", "%s: %s authorised no worker within "
                                          "%.0f s, disconnecting", self.name, peer, AUTHORIZE_WITHIN_S)
                    else:
                        self.peer_log.log(logging.INFO, "idle", "%s: %s idle for %.0f s, disconnecting", self.name,
                                          peer, idle_timeout)
                    break
                except ProtocolError as exc:
                    self.protocol_errors += 1
                    self.peer_log.log(logging.WARNING, "over-long", "%s: %s sent an over-long line (%s); "
                                      "disconnecting", self.name, peer, exc)
                    break
                if line is None:
                    break
                received = time.perf_counter()
                try:
                    msg = parse_message(line)
                except ProtocolError as exc:
                    self.protocol_errors += 1
                    session.bad_messages += 1
                    self.peer_log.log(logging.WARNING, "bad-message", "%s: bad message from %s: %s", self.name, peer,
                                      exc)
                    session.send(encode_response(None, None, error_triple(StratumErrorCode.OTHER, str(exc))))
                    if session.bad_messages >= MAX_BAD_MESSAGES:
                        break
                    continue
                if isinstance(msg, Request):
                    self._handle_request(session, msg, received)
                elif isinstance(msg, Notification):
                    log.debug("%s: notification %s from %s ignored", self.name, msg.method, peer)
                # a Response answers our client.get_version / mining.ping: nothing to do
                await session.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.peer_log.log(logging.INFO, "lost", "%s: connection to %s lost: %s", self.name, peer, exc)

    def _handle_request(self, session: S, req: Request, received: float = 0.0) -> None:
        before = session.difficulty
        first_worker = not session.workers
        try:
            if req.method == "mining.configure":
                result: Any = self._on_configure(session, req.params)
            elif req.method == "mining.subscribe":
                result = self._on_subscribe(session, req.params)
            elif req.method == "mining.authorize":
                result = self._on_authorize(session, req.params)
            elif req.method == "mining.submit":
                result = self._on_submit(session, req.params, received)
            elif req.method == "mining.suggest_difficulty":
                result = self._on_suggest_difficulty(session, req.params)
            elif req.method == "mining.extranonce.subscribe":
                session.extranonce_updates = True
                result = True
            else:
                raise ShareRejected(StratumErrorCode.OTHER, "unknown method")  # the reply never echoes the name
        except ShareRejected as exc:
            session.send(encode_response(req.id, None, error_triple(exc.code, str(exc))))
            return
        except ProtocolError as exc:
            session.send(encode_response(req.id, None, error_triple(StratumErrorCode.OTHER, str(exc))))
            return
        session.send(encode_response(req.id, result))
        if req.method == "mining.suggest_difficulty" and session.workers and session.difficulty != before:
            # A late suggestion (the usual order: after authorize) changes the difficulty of the jobs sent from
            # now on; unannounced, the miner would keep mining them at the old one (low-difficulty rejections).
            session.send(encode_notification("mining.set_difficulty", [session.difficulty]))
        if req.method == "mining.authorize" and result is True and first_worker:
            # Only the connection's first worker: it already has both for any later one (a miner authorising
            # worker names in a loop made the pool send a difficulty and a whole job for each: ~15x amplification).
            session.send(encode_notification("mining.set_difficulty", [session.difficulty]))
            job = self._job_after_authorize()
            if job is not None:
                self._send_job(session, job)

    def _on_configure(self, session: S, params: list[Any]) -> dict[str, Any]:
        if len(params) < 2 or not isinstance(params[0], list) or not isinstance(params[1], dict):
            raise ProtocolError("mining.configure needs [extensions, {parameters}]")
        result: dict[str, Any] = {}
        for ext in params[0]:
            if ext == "version-rolling":
                raw = params[1].get("version-rolling.mask", "ffffffff")
                requested = int.from_bytes(hex_field(raw, "version-rolling.mask", size=4), "big")
                session.version_mask = requested & self._allowed_version_mask()
                result["version-rolling"] = session.version_mask != 0
                result["version-rolling.mask"] = f"{session.version_mask:08x}"
            elif isinstance(ext, str):
                result[ext] = False
        return result

    def _on_suggest_difficulty(self, session: S, params: list[Any]) -> bool:
        raw = params[0] if params else None
        value = math.nan
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw) if abs(raw) < 1e300 else math.inf  # an integer of 400 digits is no float
        if not 0 < value < math.inf:
            raise ProtocolError("mining.suggest_difficulty needs a positive finite number")
        vd = self._vardiff()
        lo, hi = (vd.min_difficulty, vd.max_difficulty) if vd else self.free_difficulty_range
        new = min(max(value, lo), hi)
        if new == session.difficulty:
            return True
        session.difficulty = new
        # Vardiff measures this difficulty from now on: shares found at the old one say nothing about it (left in
        # the window, the next retarget undid the suggestion, e.g. 4x below it after 15 s without a share).
        session.window_start, session.window_shares = self._now(), 0
        if session.workers:  # after authorize the miner holds a difficulty: it is told (after this answer)
            self._difficulty_changed(session, new)
        return True

    # -- jobs and difficulty ----------------------------------------------------------------------

    def _send_job(self, session: S, job: V1Job) -> None:
        session.job_difficulty[job.job_id] = session.difficulty
        if len(session.job_difficulty) > self._max_jobs() * 2:
            for key in [k for k in session.job_difficulty if k not in self._jobs]:
                del session.job_difficulty[key]
        session.send(encode_notification("mining.notify", job.stratum.to_notify_params()))

    def _maybe_retarget(self, session: S, now: float) -> None:
        # Shares on jobs sent before a retarget stay acceptable at min(old, new) difficulty, so no job
        # needs re-issuing: the new difficulty rides on the next notify.
        vd = self._vardiff()
        if vd is None or not session.subscribed:
            return
        new = next_difficulty(session.difficulty, session.window_shares, now - session.window_start, vd)
        if new is None:
            return
        log.debug("%s: %s difficulty %g -> %g", self.name, session.peer, session.difficulty, new)
        session.difficulty = new
        session.window_start, session.window_shares = now, 0
        self._difficulty_changed(session, new)
        session.send(encode_notification("mining.set_difficulty", [new]))

    @staticmethod
    def _required_difficulty(session: S, job_id: str) -> float:
        return min(session.job_difficulty.get(job_id, session.difficulty), session.difficulty)

    # -- shares -----------------------------------------------------------------------------------

    def _submit_worker(self, session: S, params: list[Any]) -> str:
        """The worker of a ``mining.submit``: one authorised on this connection (else refused)."""
        if len(params) < 5:
            raise ProtocolError(f"mining.submit needs at least 5 params, got {len(params)}")
        worker = params[0]
        if not isinstance(worker, str) or worker not in session.workers:
            raise self._refuse_share(session, None, StratumErrorCode.UNAUTHORIZED, "unauthorized worker")
        return worker

    def _submit_fields(self, session: S, worker: str, params: list[Any], extranonce2_size: int,
                       job_version: int) -> tuple[bytes, int, int, int]:
        """``(extranonce2, ntime, nonce, header version)`` of a ``mining.submit`` on a job of ``job_version``;
        version bits outside the negotiated mask are refused."""
        en2 = hex_field(params[2], "extranonce2", size=extranonce2_size)
        ntime = u32_field(params[3], "ntime")
        nonce = u32_field(params[4], "nonce")
        version = job_version
        if len(params) > 5 and params[5] is not None:
            bits = u32_field(params[5], "version bits")
            if bits & ~session.version_mask:
                raise self._refuse_share(session, worker, StratumErrorCode.OTHER,
                                         f"version bits outside mask ({bits:08x} vs {session.version_mask:08x})")
            version = apply_version_bits(version, bits, session.version_mask)
        return en2, ntime, nonce, version
