"""The proxy's upstream: one Stratum V2 extended channel on an encrypted connection.

Tracks what the proxy needs to build V1 work: the channel's extranonce prefix and size, the current
target (``SetTarget``), future jobs and the active one (``NewExtendedMiningJob`` + ``SetNewPrevHash``).
Share answers (``SubmitShares.Success`` / ``.Error``) are matched to submits by sequence number.
Anything the pool sends is validated; a tampered frame or a certificate problem ends the session.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from openmos.base.tasks import cancel_and_wait
from openmos.bitcoin.target import MAX_TARGET
from openmos.stratum.v2.codec import Sv2CodecError, int_to_u256, u256_to_int
from openmos.stratum.v2.messages import (
    PROTOCOL_MINING,
    REQUIRES_FIXED_VERSION,
    REQUIRES_VERSION_ROLLING,
    CloseChannel,
    Message,
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    Reconnect,
    SetExtranoncePrefix,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
    UpdateChannel,
)
from openmos.stratum.v2.noise import NoiseError
from openmos.stratum.v2.transport import Sv2Connection, open_session
from openmos.stratum.v2.url import Sv2PoolUrl

log = logging.getLogger(__name__)

MAX_FUTURE_JOBS = 64
MAX_IN_FLIGHT = 65_536
MAX_CONSECUTIVE_BAD = 5


class UpstreamUnavailable(ConnectionError):
    """The V2 pool could not be reached, failed authentication or refused the channel."""


@dataclass(frozen=True)
class ActiveJob:
    """An extended job made current by a SetNewPrevHash (or sent active)."""

    job: NewExtendedMiningJob
    prev_hash: bytes
    nbits: int
    ntime: int
    clean: bool


ShareAnswer = Callable[[int, bool, str], None]  # (sequence number, accepted, error code)


class Upstream:
    """One extended channel. ``await open()``; callbacks fire on jobs, targets, prefixes and closure."""

    def __init__(self, url: Sv2PoolUrl, user: str, min_extranonce_size: int, *, agent: str = "OpenMOS proxy",
                 version_rolling: bool = True, timeout: float = 10.0,
                 on_job: Callable[[ActiveJob], None] | None = None,
                 on_target: Callable[[int], None] | None = None,
                 on_prefix: Callable[[bytes], None] | None = None,
                 on_answer: ShareAnswer | None = None,
                 on_close: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.user = user
        self.min_extranonce_size = min_extranonce_size
        self.agent = agent
        self.version_rolling = version_rolling
        self.timeout = timeout
        self.on_job, self.on_target, self.on_prefix = on_job, on_target, on_prefix
        self.on_answer, self.on_close = on_answer, on_close
        self.conn: Sv2Connection | None = None
        self.channel_id = 0
        self.extranonce_prefix = b""
        self.extranonce_size = 0
        self.target = MAX_TARGET
        self.version_rolling_allowed = False
        self.active: ActiveJob | None = None
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.reconnect_target: tuple[str, int] | None = None
        self.bad_messages = 0
        self.last_receive = 0.0
        self._future: OrderedDict[int, NewExtendedMiningJob] = OrderedDict()
        self._seq = itertools.count(1)
        self._in_flight: OrderedDict[int, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.conn = await open_session(self.url, self._setup, handshake_timeout=self.timeout,
                                       setup_timeout=self.timeout, unavailable=UpstreamUnavailable,
                                       on_setup_failed=self.close)
        self.last_receive = time.monotonic()
        self._task = asyncio.create_task(self._read_loop(self.conn), name=f"proxy-upstream {self.url}")

    async def _recv(self, conn: Sv2Connection) -> Message:
        while True:
            msg = await conn.recv()
            if msg is not None:
                return msg

    async def _setup(self, conn: Sv2Connection) -> None:
        flags = REQUIRES_VERSION_ROLLING if self.version_rolling else 0
        await conn.send(SetupConnection(PROTOCOL_MINING, 2, 2, flags, self.url.host, self.url.port, "OpenMOS",
                                        "farm proxy", self.agent[:255], ""))
        reply = await self._recv(conn)
        if isinstance(reply, SetupConnectionError):
            raise UpstreamUnavailable(f"pool refused the connection: {reply.error_code}")
        if not isinstance(reply, SetupConnectionSuccess):
            raise UpstreamUnavailable(f"unexpected answer to SetupConnection: {type(reply).__name__}")
        self.version_rolling_allowed = self.version_rolling and not reply.flags & REQUIRES_FIXED_VERSION
        await conn.send(OpenExtendedMiningChannel(1, self.user[:255], 0.0, int_to_u256(MAX_TARGET),
                                                  self.min_extranonce_size))
        while True:
            reply = await self._recv(conn)
            if isinstance(reply, OpenMiningChannelError):
                raise UpstreamUnavailable(f"pool refused the extended channel: {reply.error_code}")
            if isinstance(reply, OpenExtendedMiningChannelSuccess) and reply.request_id == 1:
                break
        if reply.extranonce_size < self.min_extranonce_size:
            raise UpstreamUnavailable(f"pool granted {reply.extranonce_size} extranonce bytes, "
                                      f"the proxy needs {self.min_extranonce_size}")
        self.channel_id = reply.channel_id
        self.extranonce_prefix = reply.extranonce_prefix
        self.extranonce_size = reply.extranonce_size
        target = u256_to_int(reply.target)
        self.target = target if target > 0 else MAX_TARGET
        log.info("proxy: extended channel %d on %s (prefix %s, %d extranonce bytes)", self.channel_id, self.url,
                 self.extranonce_prefix.hex(), self.extranonce_size)

    async def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        if self.conn is not None:
            await self.conn.close()
        await cancel_and_wait(self._task)
        if self.on_close:
            self.on_close(reason)

    # -- outgoing ---------------------------------------------------------------------------------

    def submit(self, job_id: int, nonce: int, ntime: int, version: int, extranonce: bytes) -> int:
        """Queue a share upstream; returns its sequence number (answered through ``on_answer``)."""
        conn = self.conn
        if conn is None or self.closed.is_set():
            raise ConnectionError("upstream not connected")
        seq = next(self._seq) & 0xFFFFFFFF
        conn.write(SubmitSharesExtended(self.channel_id, seq, job_id, nonce, ntime, version, extranonce))
        self._in_flight[seq] = time.monotonic()
        while len(self._in_flight) > MAX_IN_FLIGHT:
            self._in_flight.popitem(last=False)
        return seq

    def update_channel(self, nominal_hash_rate: float) -> None:
        if self.conn is not None and not self.closed.is_set():
            self.conn.write(UpdateChannel(self.channel_id, max(0.0, nominal_hash_rate), int_to_u256(MAX_TARGET)))

    # -- incoming ---------------------------------------------------------------------------------

    async def _read_loop(self, conn: Sv2Connection) -> None:
        reason = "pool closed the connection"
        bad = 0
        try:
            while True:
                try:
                    msg = await conn.recv()
                except Sv2CodecError as exc:
                    self.bad_messages += 1
                    bad += 1
                    log.warning("proxy: malformed message from %s: %s", self.url, exc)
                    if bad >= MAX_CONSECUTIVE_BAD:
                        reason = f"{bad} malformed messages in a row"
                        break
                    continue
                bad = 0
                self.last_receive = time.monotonic()
                if msg is not None and not self._dispatch(msg):
                    reason = self.close_reason or "pool ended the channel"
                    break
        except NoiseError as exc:
            reason = f"secure channel broken: {exc}"
            log.error("proxy: %s: %s", self.url, reason)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            reason = "pool closed the connection"
        except asyncio.CancelledError:
            return
        except Exception as exc:  # never leave a half-dead upstream behind a callback bug
            log.exception("proxy: internal error handling %s", self.url)
            reason = f"internal error: {exc!r}"
        await self.close(reason)

    def _dispatch(self, msg: Message) -> bool:
        channel = getattr(msg, "channel_id", self.channel_id)
        if channel != self.channel_id:
            self.bad_messages += 1
            return True
        if isinstance(msg, SubmitSharesSuccess):
            for seq in [s for s in self._in_flight if s <= msg.last_sequence_number]:
                del self._in_flight[seq]
                if self.on_answer:
                    self.on_answer(seq, True, "")
        elif isinstance(msg, SubmitSharesError):
            if self._in_flight.pop(msg.sequence_number, None) is not None and self.on_answer:
                self.on_answer(msg.sequence_number, False, msg.error_code)
        elif isinstance(msg, NewExtendedMiningJob):
            if msg.min_ntime is None:
                self._future[msg.job_id] = msg
                while len(self._future) > MAX_FUTURE_JOBS:
                    self._future.popitem(last=False)
            elif self.active is not None:
                self._activate(ActiveJob(msg, self.active.prev_hash, self.active.nbits, msg.min_ntime, False))
            else:
                self.bad_messages += 1
        elif isinstance(msg, SetNewPrevHash):
            job = self._future.pop(msg.job_id, None)
            if job is None:
                self.bad_messages += 1
                return True
            self._future.clear()
            self._activate(ActiveJob(job, msg.prev_hash, msg.nbits, msg.min_ntime, True))
        elif isinstance(msg, SetTarget):
            target = u256_to_int(msg.maximum_target)
            if target > 0:
                self.target = target
                if self.on_target:
                    self.on_target(target)
        elif isinstance(msg, SetExtranoncePrefix):
            if len(msg.extranonce_prefix) + self.extranonce_size > 32:
                self.bad_messages += 1
                return True
            self.extranonce_prefix = msg.extranonce_prefix
            if self.on_prefix:
                self.on_prefix(msg.extranonce_prefix)
        elif isinstance(msg, Reconnect):
            self.reconnect_target = (msg.new_host or self.url.host, msg.new_port or self.url.port)
            self.close_reason = f"pool asked to reconnect to {self.reconnect_target[0]}:{self.reconnect_target[1]}"
            return False
        elif isinstance(msg, CloseChannel):
            self.close_reason = f"pool closed the channel: {msg.reason_code}"
            return False
        else:
            self.bad_messages += 1
        return True

    def _activate(self, active: ActiveJob) -> None:
        self.active = active
        if self.on_job:
            self.on_job(active)
