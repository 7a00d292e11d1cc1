"""Upstream connections of a Job Declarator Client: the JDS and the pool's extended channel.

Both run over the Noise-encrypted SV2 transport with the pool's authority key. One reader task per
connection routes replies to waiting requests by ``request_id``; anything unexpected or malformed from
upstream is counted and logged, never trusted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from openmos.base.tasks import cancel_and_wait
from openmos.bitcoin.tx import TxOut, parse_outputs, serialize_outputs
from openmos.node.template import Work
from openmos.stratum.v2.codec import Sv2CodecError, int_to_u256
from openmos.stratum.v2.job_declaration import (
    DECLARE_TX_DATA,
    AllocateMiningJobToken,
    AllocateMiningJobTokenSuccess,
    DeclareMiningJob,
    DeclareMiningJobError,
    DeclareMiningJobSuccess,
    ProvideMissingTransactions,
    ProvideMissingTransactionsSuccess,
    PushSolution,
)
from openmos.stratum.v2.messages import (
    PROTOCOL_JOB_DECLARATION,
    PROTOCOL_MINING,
    REQUIRES_VERSION_ROLLING,
    REQUIRES_WORK_SELECTION,
    Message,
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)
from openmos.stratum.v2.noise import NoiseError
from openmos.stratum.v2.transport import Sv2Connection, open_connection

log = logging.getLogger(__name__)

JD_MAX_PAYLOAD = 16 << 20


class DeclarationFailed(Exception):
    """The JDS or the pool refused a declared / custom job (``code`` is the spec error_code)."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code


class _Upstream:
    def __init__(self, host: str, port: int, authority: bytes, timeout: float) -> None:
        self.host, self.port, self.authority, self.timeout = host, port, authority, timeout
        self.conn: Sv2Connection | None = None
        self.protocol_errors = 0
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.closed.is_set()

    async def _open(self, setup: SetupConnection, max_payload: int) -> None:
        conn = await open_connection(self.host, self.port, self.authority, timeout=self.timeout,
                                     max_payload=max_payload)
        try:
            await conn.send(setup)
            reply = await asyncio.wait_for(conn.recv(), self.timeout)
        except BaseException:
            await conn.close()
            raise
        if not isinstance(reply, SetupConnectionSuccess):
            await conn.close()
            code = reply.error_code if isinstance(reply, SetupConnectionError) else type(reply).__name__
            raise DeclarationFailed("setup-refused", code)
        self.conn = conn
        self.closed.clear()
        self._reader = asyncio.create_task(self._read_loop(), name=f"jd-upstream-{self.port}")

    async def close(self) -> None:
        await cancel_and_wait(self._reader)
        if self.conn is not None:
            await self.conn.close()
        self._fail_waiting()
        self.closed.set()

    def _fail_waiting(self) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("upstream connection closed"))
        self._waiting.clear()

    async def _read_loop(self) -> None:
        assert self.conn is not None
        try:
            while True:
                try:
                    msg = await self.conn.recv()
                except Sv2CodecError as exc:
                    self.protocol_errors += 1
                    log.warning("jd: malformed message from %s:%d: %s", self.host, self.port, exc)
                    continue
                if msg is not None:
                    self._route(msg)
        except (NoiseError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.warning("jd: upstream %s:%d lost: %s", self.host, self.port, exc or type(exc).__name__)
        finally:
            self.closed.set()
            self._fail_waiting()

    def _route(self, msg: Message) -> None:
        request_id = getattr(msg, "request_id", None)
        fut = self._waiting.pop(request_id, None) if isinstance(request_id, int) else None
        if fut is not None and not fut.done():
            fut.set_result(msg)
        else:
            self.on_message(msg)

    def on_message(self, msg: Message) -> None:
        self.protocol_errors += 1
        log.info("jd: unsolicited %s from %s:%d ignored", type(msg).__name__, self.host, self.port)

    async def _request(self, make: Callable[[int], Message]) -> Message:
        if self.conn is None or self.closed.is_set():
            raise ConnectionError("not connected")
        request_id = next(self._ids) & 0xFFFFFFFF
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        try:
            await self.conn.send(make(request_id))
            return await asyncio.wait_for(fut, self.timeout)
        finally:
            self._waiting.pop(request_id, None)


@dataclass(frozen=True)
class Token:
    token: bytes
    pool_outputs: tuple[TxOut, ...]


class JdsClient(_Upstream):
    """AllocateMiningJobToken / DeclareMiningJob (answering ProvideMissingTransactions) / PushSolution."""

    def __init__(self, host: str, port: int, authority: bytes, user: str, timeout: float = 10.0) -> None:
        super().__init__(host, port, authority, timeout)
        self.user = user
        self.last_missing: tuple[bytes, ...] = ()  # txids the JDS asked for in the last declaration

    async def connect(self) -> None:
        await self._open(SetupConnection(PROTOCOL_JOB_DECLARATION, 2, 2, DECLARE_TX_DATA, self.host, self.port,
                                         "OpenMOS", "", "openmos-jdc", ""), JD_MAX_PAYLOAD)

    async def allocate(self) -> Token:
        reply = await self._request(lambda rid: AllocateMiningJobToken(self.user, rid))
        if not isinstance(reply, AllocateMiningJobTokenSuccess):
            raise DeclarationFailed("unexpected-reply", type(reply).__name__)
        try:
            outputs = parse_outputs(reply.coinbase_tx_outputs)
        except ValueError as exc:
            raise DeclarationFailed("invalid-pool-outputs", str(exc)) from None
        if not outputs:
            raise DeclarationFailed("invalid-pool-outputs", "the pool named no payout output")
        return Token(reply.mining_job_token, outputs)

    async def declare(self, token: bytes, work: Work) -> bytes:
        """The declared job's new token (for SetCustomMiningJob); DeclarationFailed if the JDS refuses."""
        msg_holder: list[DeclareMiningJob] = []

        def make(rid: int) -> Message:
            msg = DeclareMiningJob(rid, token, work.template.version, work.coinbase.prefix, work.coinbase.suffix,
                                   work.wtxids, b"")
            msg_holder.append(msg)
            return msg

        self.last_missing = ()
        reply = await self._request(make)
        if isinstance(reply, ProvideMissingTransactions):
            data = [t.data for t in work.selection.txs]
            if any(p >= len(data) for p in reply.unknown_tx_position_list):
                raise DeclarationFailed("invalid-missing-request", "the JDS asked for a position we did not declare")
            self.last_missing = tuple(work.selection.txs[p].txid for p in reply.unknown_tx_position_list)
            rid = reply.request_id
            assert self.conn is not None
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._waiting[rid] = fut
            try:
                await self.conn.send(ProvideMissingTransactionsSuccess(
                    rid, tuple(data[p] for p in reply.unknown_tx_position_list)))
                reply = await asyncio.wait_for(fut, self.timeout)
            finally:
                self._waiting.pop(rid, None)
        if isinstance(reply, DeclareMiningJobError):
            raise DeclarationFailed(reply.error_code, reply.error_details.decode(errors="replace"))
        if not isinstance(reply, DeclareMiningJobSuccess):
            raise DeclarationFailed("unexpected-reply", type(reply).__name__)
        return reply.new_mining_job_token

    async def push_solution(self, extranonce: bytes, prev_hash: bytes, nonce: int, ntime: int, nbits: int,
                            version: int) -> None:
        if self.conn is not None and not self.closed.is_set():
            await self.conn.send(PushSolution(extranonce, prev_hash, nonce, ntime, nbits, version))


@dataclass
class PoolJobs:
    """What the pool itself sends on our extended channel (the fallback work)."""

    jobs: dict[int, NewExtendedMiningJob] = field(default_factory=dict)
    prev: SetNewPrevHash | None = None
    target: bytes = b""


class MiningUpstream(_Upstream):
    """One extended channel on the pool with work selection: pool jobs, custom jobs, share submission."""

    def __init__(self, host: str, port: int, authority: bytes, user: str, timeout: float = 10.0,
                 on_pool_job: Callable[[], None] | None = None) -> None:
        super().__init__(host, port, authority, timeout)
        self.user = user
        self.channel_id = 0
        self.extranonce_prefix = b""
        self.extranonce_size = 0
        self.pool = PoolJobs()
        self.on_pool_job = on_pool_job
        self.accepted = 0
        self.rejected: dict[str, int] = {}  # shares refused although their block was still current
        self.stale_new_block = 0  # refused because a new block arrived while they were in flight
        self._seq = itertools.count(1)
        self._inflight: dict[int, bytes] = {}  # sequence number -> prev hash the share was mined on

    async def connect(self, nominal_hash_rate: float = 1e9, min_extranonce_size: int = 4) -> None:
        await self._open(SetupConnection(PROTOCOL_MINING, 2, 2, REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING,
                                         self.host, self.port, "OpenMOS", "", "openmos-jdc", ""), 1 << 20)
        reply = await self._request(lambda rid: OpenExtendedMiningChannel(
            rid, self.user, nominal_hash_rate, int_to_u256((1 << 256) - 1), min_extranonce_size))
        if isinstance(reply, OpenMiningChannelError):
            raise DeclarationFailed(reply.error_code)
        if not isinstance(reply, OpenExtendedMiningChannelSuccess):
            raise DeclarationFailed("unexpected-reply", type(reply).__name__)
        self.channel_id = reply.channel_id
        self.extranonce_prefix = reply.extranonce_prefix
        self.extranonce_size = reply.extranonce_size
        self.pool.target = reply.target

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, NewExtendedMiningJob):
            self.pool.jobs[msg.job_id] = msg
            if len(self.pool.jobs) > 64:
                self.pool.jobs.pop(next(iter(self.pool.jobs)))
        elif isinstance(msg, SetNewPrevHash):
            self.pool.prev = msg
            self.pool.jobs = {k: v for k, v in self.pool.jobs.items() if k == msg.job_id}
        elif isinstance(msg, SetTarget):
            self.pool.target = msg.maximum_target
            return
        elif isinstance(msg, SubmitSharesSuccess):
            self.accepted += msg.new_submits_accepted_count
            return
        elif isinstance(msg, SubmitSharesError):
            prev = self._inflight.pop(msg.sequence_number, None)
            if prev is not None and self.pool.prev is not None and prev != self.pool.prev.prev_hash:
                self.stale_new_block += 1  # the race every pool has right after a block
                return
            self.rejected[msg.error_code] = self.rejected.get(msg.error_code, 0) + 1
            log.warning("jd: pool rejected a share: %s", msg.error_code)
            return
        else:
            super().on_message(msg)
            return
        if self.on_pool_job is not None:
            self.on_pool_job()

    async def set_custom_job(self, token: bytes, work: Work, min_ntime: int) -> int:
        """The pool's job_id for our template; DeclarationFailed if the pool refuses it."""
        t = work.template
        reply = await self._request(lambda rid: SetCustomMiningJob(
            self.channel_id, rid, token, t.version, t.prev_hash, min_ntime, t.bits, work.tx_version,
            work.script_prefix, work.sequence, serialize_outputs(work.outputs), work.locktime,
            work.merkle_path))
        if isinstance(reply, SetCustomMiningJobError):
            raise DeclarationFailed(reply.error_code)
        if not isinstance(reply, SetCustomMiningJobSuccess):
            raise DeclarationFailed("unexpected-reply", type(reply).__name__)
        return reply.job_id

    def submit(self, job_id: int, nonce: int, ntime: int, version: int, extranonce: bytes,
               prev_hash: bytes = b"") -> None:
        if self.conn is None or self.closed.is_set():
            raise ConnectionError("pool connection is down")
        seq = next(self._seq) & 0xFFFFFFFF
        self._inflight[seq] = prev_hash
        if len(self._inflight) > 4096:
            self._inflight.pop(next(iter(self._inflight)))
        self.conn.write(SubmitSharesExtended(self.channel_id, seq, job_id, nonce, ntime, version, extranonce))
