"""Asyncio Stratum V1 client: one connection to one pool.

The client negotiates version rolling (BIP310), subscribes (offering the previous session id so a pool
that supports resumption hands back the same extranonce1), authorises, and then turns the pool's
notifications into callbacks. It never raises on bad input from the pool: malformed lines are logged and
counted, and a pool that keeps sending garbage or stops answering is disconnected so the pool manager can
fail over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openmos.base.logs import LogLimiter
from openmos.bitcoin.version import BIP320_MASK
from openmos.stratum.difficulty import BadDifficulty, DifficultyRange, check_difficulty
from openmos.stratum.ending import EndingSession
from openmos.stratum.job import Share, StratumJob
from openmos.stratum.protocol import (
    MAX_LINE_BYTES,
    Notification,
    ProtocolError,
    Request,
    Response,
    StratumErrorCode,
    encode_request,
    encode_response,
    hex_field,
    parse_message,
    read_line,
)
from openmos.stratum.url import PoolUrl

log = logging.getLogger(__name__)

# After this many consecutive unparseable lines the pool is treated as broken.
MAX_CONSECUTIVE_BAD_LINES = 5
MAX_POOL_MESSAGES = 20  # client.show_message texts kept


class PoolUnavailable(ConnectionError):
    """The pool could not be reached or refused the handshake."""


@dataclass(frozen=True)
class SubmitResult:
    accepted: bool
    reason: str = ""
    stale: bool = False
    duplicate: bool = False  # the pool says it already has this share


@dataclass
class ShareCounters:
    accepted: int = 0
    rejected: int = 0
    stale: int = 0
    accepted_difficulty: float = 0.0
    rejected_difficulty: float = 0.0
    best_share: float = 0.0
    last_share_time: float = 0.0
    reject_reasons: Counter[str] = field(default_factory=Counter)

    def record(self, result: SubmitResult, share: Share) -> None:
        """Count one answered submit, credited at the pool difficulty the share was mined for."""
        difficulty, share_difficulty = share.pool_difficulty, share.difficulty
        self.last_share_time = time.time()
        if result.accepted:
            self.accepted += 1
            self.accepted_difficulty += difficulty
            self.best_share = max(self.best_share, share_difficulty)
        elif result.stale:
            self.stale += 1
        else:
            self.rejected += 1
            self.rejected_difficulty += difficulty
        if not result.accepted:  # reasons are pool text: keep the number of distinct keys bounded
            key = result.reason if result.reason in self.reject_reasons or len(self.reject_reasons) < 32 else "other"
            self.reject_reasons[key] += 1


@dataclass(frozen=True)
class ClientOptions:
    agent: str = "openmos/0.1"
    version_mask: int = BIP320_MASK  # requested; 0 disables version rolling
    suggest_difficulty: float | None = None
    response_timeout: float = 10.0
    connect_timeout: float = 5.0
    allowed_reconnect_hosts: frozenset[str] = frozenset()
    session_id: str | None = None  # offered in mining.subscribe for session resumption
    ssl_context: ssl.SSLContext | None = None
    difficulty_range: DifficultyRange = field(default_factory=DifficultyRange)  # outside it: refused
    probe_method: str = "mining.extranonce.subscribe"  # liveness probe (see StratumClient.probe); "": none


def _extranonce2_size(value: Any) -> int:
    """The pool's extranonce2 size: an integer 1..16 (JSON ``true`` is not 1, nor ``4.0`` 4)."""
    if type(value) is not int or not 1 <= value <= 16:
        raise ProtocolError(f"extranonce2_size must be an integer 1..16, got {str(value)[:40]}")
    return value


def _is_stale(response: Response) -> bool:
    code = response.error_code()
    text = response.error_text().lower()
    return code == StratumErrorCode.JOB_NOT_FOUND or "stale" in text or "job not found" in text


def _is_duplicate(response: Response) -> bool:
    return response.error_code() == StratumErrorCode.DUPLICATE_SHARE or "duplicate" in response.error_text().lower()


class StratumClient(EndingSession):
    """One Stratum V1 session. Create, ``await connect()``, then react to callbacks and ``submit``."""

    def __init__(
        self,
        url: PoolUrl,
        user: str,
        password: str = "x",
        options: ClientOptions | None = None,
        *,
        on_job: Callable[[StratumClient, StratumJob], None] | None = None,
        on_difficulty: Callable[[StratumClient, float], None] | None = None,
        on_close: Callable[[StratumClient, str], None] | None = None,
    ) -> None:
        self.url = url
        self.user = user
        self.password = password
        self.options = options or ClientOptions()
        self._on_job = on_job
        self._on_difficulty = on_difficulty
        self._on_close = on_close
        self.extranonce1 = b""
        self.extranonce2_size = 4
        self.difficulty = 1.0
        self.version_mask = 0
        self.session_id: str | None = None
        self.authorized = False
        self.counters = ShareCounters()
        self.bad_lines = 0
        self.difficulty_rejections = 0  # set_difficulty values refused (non-finite, out of range)
        self.difficulty_governed = 0  # accepted values the share-rate governor has to raise
        self.difficulty_slow = 0  # accepted values meaning one share per more than a day on this hardware
        self.jobs_received = 0
        self.connected_at = 0.0
        self.pool_messages: deque[str] = deque(maxlen=MAX_POOL_MESSAGES)
        self._log = LogLimiter(log)
        self.reconnect_target: tuple[str, int] | None = None
        self.close_reason = ""
        self.failed_quality = False  # closed because the pool sent garbage (not merely went away)
        self.hung_up = False  # the pool (or something in front of it) closed the connection
        self.last_job: StratumJob | None = None
        self.last_receive = 0.0
        self.closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._pending: dict[int | str, asyncio.Future[Response]] = {}
        self._submits: dict[object, float] = {}  # outstanding submits -> monotonic time sent
        # Liveness probe: does this pool answer probe_method (None: not known yet), the outstanding probe
        # (id, monotonic time sent), answers received and the slowest of them (s).
        self.probe_answered: bool | None = None
        self.probes_sent = 0
        self.probe_answers = 0
        self.probe_slowest = 0.0
        self._probe: tuple[int, float] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._consecutive_bad = 0

    # -- connection -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and complete configure/subscribe/authorize, or raise PoolUnavailable."""
        ctx: ssl.SSLContext | None = None
        if self.url.tls:
            ctx = self.options.ssl_context or ssl.create_default_context()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.url.host, self.url.port, ssl=ctx, limit=MAX_LINE_BYTES),
                self.options.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise PoolUnavailable(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from None
        self.last_receive = self.connected_at = time.monotonic()
        self._read_task = asyncio.create_task(self._read_loop(), name=f"stratum-read {self.url}")
        try:
            await self._handshake()
        except (ProtocolError, PoolUnavailable, TimeoutError, ConnectionError) as exc:
            await self.close(f"handshake failed: {exc}")
            raise PoolUnavailable(f"{self.url}: handshake failed: {exc}") from None

    async def _handshake(self) -> None:
        if self.options.version_mask:
            resp = await self.call(
                "mining.configure",
                [["version-rolling"], {"version-rolling.mask": f"{self.options.version_mask:08x}",
                                       "version-rolling.min-bit-count": 2}],
            )
            result = resp.result if isinstance(resp.result, dict) else {}
            if resp.ok and result.get("version-rolling") is True:
                mask = int(hex_field(result.get("version-rolling.mask", "0"), "version mask", size=4).hex(), 16)
                self.version_mask = mask & self.options.version_mask
            else:
                log.info("%s: pool does not support version rolling; mining without it", self.url)
        sub_params: list[Any] = [self.options.agent]
        if self.options.session_id:
            sub_params.append(self.options.session_id)
        resp = await self.call("mining.subscribe", sub_params)
        if not resp.ok or not isinstance(resp.result, list) or len(resp.result) < 3:
            raise ProtocolError(f"mining.subscribe refused or malformed: {resp.error_text() or resp.result!r}")
        self.extranonce1 = hex_field(resp.result[1], "extranonce1", max_size=32)
        self.extranonce2_size = _extranonce2_size(resp.result[2])
        self.session_id = self._subscription_id(resp.result[0]) or self.extranonce1.hex()
        resp = await self.call("mining.authorize", [self.user, self.password])
        if not resp.ok or resp.result is not True:
            raise ProtocolError(f"worker {self.user!r} not authorised: {resp.error_text()}")
        self.authorized = True
        if self.options.suggest_difficulty:
            await self.send_notification_call("mining.suggest_difficulty", [self.options.suggest_difficulty])
        if self.options.probe_method == "mining.extranonce.subscribe":
            self.probe()  # the usual request, doubling as the first probe: whether this pool answers it is learnt
        else:
            await self.send_notification_call("mining.extranonce.subscribe", [])

    @staticmethod
    def _subscription_id(subscriptions: Any) -> str | None:
        # [["mining.set_difficulty", id], ["mining.notify", id]] -- the notify id is the resumable session.
        if isinstance(subscriptions, list):
            for item in subscriptions:
                if isinstance(item, list) and len(item) == 2 and item[0] == "mining.notify":
                    return str(item[1])
        return None

    async def _close_transport(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    # -- requests ---------------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if self._writer is None or self.closed.is_set():
            raise ConnectionError(f"not connected to {self.url}")
        self._writer.write(data)
        await self._writer.drain()

    async def call(self, method: str, params: list[Any], timeout: float | None = None) -> Response:
        msg_id = next(self._ids)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            await self._write(encode_request(msg_id, method, params))
            return await asyncio.wait_for(fut, timeout or self.options.response_timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.url}: no answer to {method} within "
                               f"{timeout or self.options.response_timeout:.0f} s") from None
        finally:
            self._pending.pop(msg_id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # close() may have failed it while the write was failing: mark it seen

    @property
    def unanswered_since(self) -> float | None:
        """When the oldest request still waiting for its answer was sent (monotonic), None if none waits: the
        submits, and the liveness probe once this pool is known to answer it."""
        probe = self._probe[1] if self._probe is not None and self.probe_answered else None
        return min([*self._submits.values(), *([probe] if probe is not None else [])], default=None)

    def probe(self) -> bool:
        """Send the liveness probe (``options.probe_method``, no params) unless one is outstanding or this pool
        is known not to answer it; True if sent. It asks nothing of the pool's state: any answer, result or
        error, says the pool is alive (some pools answer it, some never do: ckpool and public-pool ignore
        unknown methods and ``mining.extranonce.subscribe``; that is learnt, not assumed)."""
        if (not self.options.probe_method or self.probe_answered is False or self._probe is not None
                or self._writer is None or self.closed.is_set() or self._writer.is_closing()):
            return False
        msg_id = next(self._ids)
        self._writer.write(encode_request(msg_id, self.options.probe_method, []))  # a few bytes: no drain wait
        self._probe = (msg_id, time.monotonic())
        self.probes_sent += 1
        return True

    def _probe_answer(self, now: float) -> None:
        assert self._probe is not None
        took = now - self._probe[1]
        self._probe = None
        self.probe_answered = True
        self.probe_answers += 1
        self.probe_slowest = max(self.probe_slowest, took)

    def _probe_ignored(self, now: float) -> None:
        """A message arrives ``now`` while the probe has waited past the response timeout: this pool does not
        answer it (no suspicion can rest on it; no more probes on this session)."""
        if self._probe is not None and now - self._probe[1] > self.options.response_timeout:
            self._probe = None
            self.probe_answered = False
            log.info("%s: the pool does not answer %s; no liveness probes on this session", self.url,
                     self.options.probe_method)

    async def send_notification_call(self, method: str, params: list[Any]) -> None:
        """A request whose answer we do not wait for (pools differ in whether they answer at all)."""
        await self._write(encode_request(next(self._ids), method, params))

    async def submit(self, share: Share) -> SubmitResult:
        """Submit a share; a pool that does not answer in time is closed (so failover can happen)."""
        token = object()
        self._submits[token] = time.monotonic()
        try:
            resp = await self.call("mining.submit", share.submit_params(self.user))
        except TimeoutError as exc:
            self.failed_quality = True  # a pool that stops answering submits is not one to retry at once
            await self.close(str(exc))
            raise ConnectionError(str(exc)) from None
        finally:
            del self._submits[token]
        if resp.ok and resp.result is True:
            result = SubmitResult(True)
        else:
            result = SubmitResult(False, resp.error_text()[:200], _is_stale(resp), _is_duplicate(resp))
        self.counters.record(result, share)
        return result

    # -- incoming ---------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "pool closed the connection"
        try:
            while True:
                try:
                    line = await read_line(self._reader)
                except ProtocolError as exc:
                    reason = f"protocol error: {exc}"
                    self.failed_quality = True
                    log.warning("%s: %s; dropping connection", self.url, exc)
                    break
                if line is None:
                    self.hung_up = True
                    break
                self.last_receive = time.monotonic()
                self._probe_ignored(self.last_receive)
                try:
                    await self._dispatch(parse_message(line))
                    self._consecutive_bad = 0
                except ProtocolError as exc:
                    self.bad_lines += 1
                    self._consecutive_bad += 1
                    self._log.log(logging.WARNING, "bad-message", "%s: ignoring bad message (%s): %.200r",
                                  self.url, exc, line)
                    if self._consecutive_bad >= MAX_CONSECUTIVE_BAD_LINES:
                        reason = f"{self._consecutive_bad} bad messages in a row"
                        self.failed_quality = True
                        break
        except (ConnectionError, OSError) as exc:
            self.hung_up = True
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug behind a callback must not leave a silent half-dead session
            log.exception("%s: internal error while handling pool message", self.url)
            reason = f"internal error: {exc!r}"
        await self.close(reason)

    async def _dispatch(self, msg: Request | Notification | Response) -> None:
        if isinstance(msg, Response):
            if self._probe is not None and type(msg.id) is int and msg.id == self._probe[0]:
                self._probe_answer(self.last_receive)  # whatever it says (result or error): the pool is alive
                return
            fut = self._pending.get(msg.id) if msg.id is not None else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        method, params = msg.method, msg.params
        msg_id = msg.id if isinstance(msg, Request) else None
        if method == "mining.notify":
            job = StratumJob.from_notify(params)
            self.last_job = job
            self.jobs_received += 1
            if self._on_job:
                self._on_job(self, job)
        elif method == "mining.set_difficulty":
            if not params:
                raise ProtocolError("mining.set_difficulty needs a difficulty")
            try:
                difficulty = check_difficulty(params[0], self.options.difficulty_range)
            except BadDifficulty as exc:
                self.difficulty_rejections += 1
                raise ProtocolError(f"mining.set_difficulty refused, keeping {self.difficulty:g}: {exc}") from None
            self._judge_difficulty(difficulty)
            self.difficulty = difficulty
            if self._on_difficulty:
                self._on_difficulty(self, self.difficulty)
        elif method == "mining.set_extranonce":
            if len(params) < 2:
                raise ProtocolError(f"mining.set_extranonce needs [extranonce1, size], got {str(params)[:80]}")
            size = _extranonce2_size(params[1])
            self.extranonce1 = hex_field(params[0], "extranonce1", max_size=32)
            self.extranonce2_size = size
        elif method == "mining.set_version_mask":
            if not params:
                raise ProtocolError("mining.set_version_mask needs a mask")
            mask = int.from_bytes(hex_field(params[0], "version mask", size=4), "big")
            self.version_mask = mask & self.options.version_mask
        elif method == "client.reconnect":
            await self._handle_reconnect(params)
        elif method == "client.show_message":
            text = str(params[0])[:500] if params else ""
            self.pool_messages.append(text)
            self._log.log(logging.INFO, "show-message", "%s says: %s", self.url, text)
        elif method == "client.get_version":
            if msg_id is not None:
                await self._write(encode_response(msg_id, self.options.agent))
        elif method == "mining.ping":
            if msg_id is not None:
                await self._write(encode_response(msg_id, "pong"))
        else:
            self._log.log(logging.INFO, "unknown-method", "%s: unknown method %.60s ignored", self.url, method)
            if msg_id is not None:
                await self._write(encode_response(msg_id, None, [20, f"unknown method {method}", None]))

    def _judge_difficulty(self, difficulty: float) -> None:
        """Count (and say, rate-limited) accepted values at the edges of what this hardware can use."""
        allowed = self.options.difficulty_range
        if difficulty < allowed.governed_below:
            self.difficulty_governed += 1
            self._log.log(logging.WARNING, "governed-difficulty", "%s: difficulty %g means more shares than the "
                          "share-rate governor allows; mining at %g instead (shares still credited at %g)",
                          self.url, difficulty, allowed.governed_below, difficulty)
        elif difficulty > allowed.slow_above:
            self.difficulty_slow += 1
            self._log.log(logging.WARNING, "slow-difficulty", "%s: difficulty %g means one share per more than "
                          "%.0f h on this hardware (%g: one per %g h); still mining, but the pool will see "
                          "almost nothing", self.url, difficulty, allowed.slow_hours * difficulty / allowed.slow_above,
                          allowed.slow_above, allowed.slow_hours)

    async def _handle_reconnect(self, params: list[Any]) -> None:
        host = params[0] if params and isinstance(params[0], str) and params[0] else self.url.host
        raw = params[1] if len(params) > 1 and params[1] not in (None, "") else self.url.port
        # An integer or a string of digits (some pools send "3333"); true (a bool is an int) and 80.7 are refused.
        if isinstance(raw, int) and not isinstance(raw, bool):
            port = raw
        elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 5:
            port = int(raw)
        else:
            raise ProtocolError(f"client.reconnect port is not a whole number: {str(raw)[:40]!r}")
        if not 0 < port < 65536:
            raise ProtocolError(f"client.reconnect port {str(port)[:40]} is out of range")
        allowed = host == self.url.host or host in self.options.allowed_reconnect_hosts
        if not allowed:
            # BGP-hijack style redirection: never follow a pool to a host the operator did not list.
            log.warning("%s: refused client.reconnect to unlisted host %s:%s", self.url, host, port)
            return
        self.reconnect_target = (host, port)
        await self.close(f"pool asked to reconnect to {host}:{port}")
