"""Stratum V2 device client: one encrypted connection, one standard channel, header-only mining.

The device never sees a coinbase: the pool sends ``NewMiningJob`` with the merkle root already computed
for this channel's extranonce prefix, and ``SetNewPrevHash`` to activate future jobs. The search space
of a standard job is nonce x version x ntime (sv2-spec 5.1.1): the hardware rolls the BIP320 bits it
negotiates (0x1fffe000) and the agent's extranonce2 counter walks the remaining BIP323 general-purpose bits
(0x00001fe0), so two work items never share a header. ``SetTarget`` drives the share difficulty;
``Reconnect`` is followed only to the present host or an operator-listed host, and only with the same
authority key. Malformed or unexpected messages are counted and logged; tampering (a MAC failure) or a
certificate problem ends the session with the reason in ``close_reason``.

A pool may acknowledge shares in batches (one ``SubmitShares.Success`` up to a sequence number; the
specification's example acknowledges every 10). The client learns the pool's batching from its answers --
the most submits one acknowledgement covered (``ack_batch``), and, from acknowledgements of fewer (a batch
closed on a timer), how long the oldest of them waited (``ack_wait_s``) -- and ``unanswered_since`` only
reports a submit the pool's batching does not explain, so a quiet batching pool is not suspected of a stall
while a pool that stops answering still is. A pool seen to close only full batches owes nothing while fewer
submits wait: its answer waits for the miner's next shares, so there only ``stall_timeout_s`` confirms a stall.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from openmos.bitcoin import BlockHeader, difficulty_to_target, target_to_difficulty
from openmos.bitcoin.target import MAX_TARGET
from openmos.bitcoin.version import BIP320_MASK
from openmos.stratum.client import ClientOptions, PoolUnavailable, ShareCounters, SubmitResult
from openmos.stratum.ending import EndingSession
from openmos.stratum.job import Share, StratumJob
from openmos.stratum.v2.codec import Sv2CodecError, int_to_u256, u256_to_int
from openmos.stratum.v2.messages import (
    PROTOCOL_MINING,
    REQUIRES_FIXED_VERSION,
    REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING,
    ChannelEndpointChanged,
    CloseChannel,
    Message,
    NewMiningJob,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    Reconnect,
    SetExtranoncePrefix,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesStandard,
    SubmitSharesSuccess,
)
from openmos.stratum.v2.noise import NoiseError
from openmos.stratum.v2.transport import Sv2Connection, open_session
from openmos.stratum.v2.url import Sv2PoolUrl

log = logging.getLogger(__name__)

BIP323_MASK = 0x1FFFFFE0  # general-purpose version bits (sv2-spec 5.1)
EXTRA_VERSION_MASK = BIP323_MASK & ~BIP320_MASK  # 0x00001fe0: rolled by the agent, not the hardware
MAX_PENDING_JOBS = 64
MAX_CONSECUTIVE_BAD = 5
STALE_CODES = ("stale", "invalid-job-id", "job-not-found")
# Submits a pool may hold for one batch before its first acknowledgement shows how it batches: the
# specification's example batch ("acknowledges every 10 successful submissions", sv2-spec 5.3.13).
SPEC_EXAMPLE_BATCH = 10
MAX_ACK_BATCH = 100  # the most submits a learned batch may count (a hostile pool cannot blind the agent longer)


@dataclass(frozen=True)
class StandardJob(StratumJob):
    """A V2 standard (header-only) job in the agent's job model: fixed merkle root, no coinbase."""

    fixed_merkle_root: bytes = b""

    def merkle_root(self, extranonce1: bytes, extranonce2: bytes) -> bytes:
        return self.fixed_merkle_root

    def header(self, extranonce1: bytes, extranonce2: bytes, *, ntime: int, nonce: int,
               version: int) -> BlockHeader:
        # extranonce2 (0 or 1 byte) selects the BIP323 bits the hardware does not roll.
        extra = int.from_bytes(extranonce2, "big") << 5 if extranonce2 else 0
        version = (version & ~EXTRA_VERSION_MASK & 0xFFFFFFFF) | (extra & EXTRA_VERSION_MASK)
        return BlockHeader(version, self.prev_hash, self.fixed_merkle_root, ntime, self.nbits, nonce)


class Sv2Client(EndingSession):
    """One Stratum V2 session. Same surface as ``StratumClient`` (``PoolSession``)."""

    def __init__(self, url: Sv2PoolUrl, user: str, password: str = "x", options: ClientOptions | None = None, *,
                 on_job: Callable[[Sv2Client, StratumJob], None] | None = None,
                 on_difficulty: Callable[[Sv2Client, float], None] | None = None,
                 on_close: Callable[[Sv2Client, str], None] | None = None,
                 nominal_hash_rate: float = 0.0) -> None:
        self.url = url
        self.user = user
        self.options = options or ClientOptions()
        self.nominal_hash_rate = nominal_hash_rate
        self._on_job = on_job
        self._on_difficulty = on_difficulty
        self._on_close = on_close
        self.extranonce1 = b""  # the channel's extranonce_prefix: identifies the session's work
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.target = MAX_TARGET
        self.version_mask = 0
        self.session_id: str | None = None
        self.authorized = False
        self.channel_id: int | None = None
        self.counters = ShareCounters()
        self.bad_messages = 0
        self.jobs_received = 0  # pool-session health, read by the pool manager's quality failover
        self.connected_at = 0.0
        self.failed_quality = False
        self.reconnect_target: tuple[str, int] | None = None
        self.close_reason = ""
        self.last_job: StratumJob | None = None
        self.last_receive = 0.0
        self.closed = asyncio.Event()
        self.conn: Sv2Connection | None = None
        self._future_jobs: dict[int, NewMiningJob] = {}
        self._prev: SetNewPrevHash | None = None
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[SubmitResult]] = {}
        self._sent_at: dict[int, float] = {}  # outstanding submits -> monotonic time sent
        self.ack_batch = 0  # most outstanding submits one SubmitShares.Success covered (0: none seen yet)
        self.ack_wait_s = 0.0  # oldest submit's wait in a partial (timed) batch: slowest recent, -10 % per one
        self._read_task: asyncio.Task[None] | None = None
        self._consecutive_bad = 0

    # -- connection -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Handshake (certificate checked), SetupConnection, open a standard channel; else PoolUnavailable."""
        self.conn = await open_session(
            self.url, self._setup, handshake_timeout=max(self.options.connect_timeout, self.options.response_timeout),
            setup_timeout=self.options.response_timeout, unavailable=PoolUnavailable, on_setup_failed=self.close)
        self._read_task = asyncio.create_task(self._read_loop(self.conn), name=f"sv2-read {self.url}")

    async def _setup(self, conn: Sv2Connection) -> None:
        self.last_receive = self.connected_at = time.monotonic()  # the handshake is done
        want_rolling = self.options.version_mask != 0
        flags = REQUIRES_STANDARD_JOBS | (REQUIRES_VERSION_ROLLING if want_rolling else 0)
        await conn.send(SetupConnection(PROTOCOL_MINING, 2, 2, flags, self.url.host, self.url.port,
                                        "OpenMOS", self.options.agent[:255], self.options.agent[:255], ""))
        reply = await self._expect(conn)
        if isinstance(reply, SetupConnectionError):
            raise PoolUnavailable(f"pool refused the connection: {reply.error_code} (flags {reply.flags:#x})")
        if not isinstance(reply, SetupConnectionSuccess) or reply.used_version != 2:
            raise PoolUnavailable(f"unexpected answer to SetupConnection: {reply!r}")
        fixed = bool(reply.flags & REQUIRES_FIXED_VERSION)
        self.version_mask = 0 if fixed else self.options.version_mask & BIP320_MASK
        self.extranonce2_size = 1 if self.version_mask else 0
        rate = self.nominal_hash_rate if math.isfinite(self.nominal_hash_rate) else 0.0
        await conn.send(OpenStandardMiningChannel(1, self.user[:255], max(0.0, rate), int_to_u256(MAX_TARGET)))
        while True:
            reply = await self._expect(conn)
            if isinstance(reply, OpenMiningChannelError):
                raise PoolUnavailable(f"pool refused the channel for {self.user!r}: {reply.error_code}")
            if isinstance(reply, OpenStandardMiningChannelSuccess) and reply.request_id == 1:
                break
            self._handle_early(reply)
        self.channel_id = reply.channel_id
        self.extranonce1 = reply.extranonce_prefix
        self.session_id = reply.extranonce_prefix.hex()
        self._set_target(reply.target)
        self.authorized = True
        log.info("%s: standard channel %d open (target difficulty %g, version mask %08x)", self.url,
                 reply.channel_id, self.difficulty, self.version_mask)

    async def _expect(self, conn: Sv2Connection) -> Message:
        while True:
            msg = await conn.recv()
            self.last_receive = time.monotonic()
            if msg is not None:
                return msg

    def _handle_early(self, msg: Message) -> None:
        log.debug("%s: ignoring %s before the channel is open", self.url, type(msg).__name__)

    async def _close_transport(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    # -- shares -----------------------------------------------------------------------------------

    async def submit(self, share: Share) -> SubmitResult:
        conn, channel = self.conn, self.channel_id
        if conn is None or channel is None or self.closed.is_set():
            raise ConnectionError(f"not connected to {self.url}")
        try:
            job_id = int(share.job_id)
        except ValueError:
            raise ConnectionError(f"share for job {share.job_id!r} is not a V2 job") from None
        seq = next(self._seq) & 0xFFFFFFFF
        fut: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        self._sent_at[seq] = time.monotonic()
        try:
            await conn.send(SubmitSharesStandard(channel, seq, job_id, share.nonce, share.ntime, share.version))
            result = await asyncio.wait_for(fut, self.options.response_timeout)
        except TimeoutError:
            await self.close(f"no answer to share {seq} within {self.options.response_timeout:.0f} s")
            raise ConnectionError(f"{self.url}: share not answered") from None
        except OSError as exc:
            raise ConnectionError(str(exc)) from None
        finally:
            self._pending.pop(seq, None)
            self._sent_at.pop(seq, None)
        if not result.accepted:
            log.warning("%s: share %s: %s", self.url, "stale" if result.stale else "rejected", result.reason)
        self.counters.record(result, share)
        return result

    def _acknowledge(self, msg: SubmitSharesSuccess) -> None:
        # Success may acknowledge a batch: every outstanding submit up to last_sequence_number was accepted.
        covered = sorted(s for s in self._pending if s <= msg.last_sequence_number)
        if covered:  # learn the pool's batching (bounded by the submits that were waiting, not by its numbers)
            if len(covered) < self.ack_batch:  # a partial batch: the pool closes batches on time as well
                oldest = min((self._sent_at[s] for s in covered if s in self._sent_at), default=time.monotonic())
                self.ack_wait_s = max(time.monotonic() - oldest, 0.9 * self.ack_wait_s)
            self.ack_batch = min(max(self.ack_batch, len(covered)), MAX_ACK_BATCH)
        for seq in covered:
            fut = self._pending.pop(seq)
            if not fut.done():
                fut.set_result(SubmitResult(True))

    def _reject(self, msg: SubmitSharesError) -> None:
        fut = self._pending.pop(msg.sequence_number, None)
        if fut is not None and not fut.done():
            code = msg.error_code
            fut.set_result(SubmitResult(False, code, any(s in code.lower() for s in STALE_CODES)))

    @property
    def unanswered_since(self) -> float | None:
        """When the oldest submit still waiting for an answer the pool owes was sent (monotonic), None if none.

        With a full batch waiting (its largest seen; the specification's example batch before the first
        acknowledgement), the submit that completed it counts. With fewer, the oldest counts if the pool has
        closed a batch on time before (``ack_wait_s`` tells the stall check how long it takes), else none: the
        pool waits for more shares."""
        waiting = sorted(self._sent_at.values())
        batch = self.ack_batch or SPEC_EXAMPLE_BATCH
        if len(waiting) >= batch:
            return waiting[batch - 1]
        return waiting[0] if waiting and self.ack_wait_s > 0 else None

    @property
    def bad_lines(self) -> int:
        """Malformed or out-of-place messages this session (the name the pool manager reads)."""
        return self.bad_messages

    # -- incoming ---------------------------------------------------------------------------------

    async def _read_loop(self, conn: Sv2Connection) -> None:
        reason = "pool closed the connection"
        try:
            while True:
                try:
                    msg = await conn.recv()
                except Sv2CodecError as exc:
                    # Framing is intact (the MAC verified), only the content is bad: count it, go on.
                    self.bad_messages += 1
                    self._consecutive_bad += 1
                    log.warning("%s: ignoring malformed message: %s", self.url, exc)
                    if self._consecutive_bad >= MAX_CONSECUTIVE_BAD:
                        reason = f"{self._consecutive_bad} malformed messages in a row"
                        self.failed_quality = True
                        break
                    continue
                self.last_receive = time.monotonic()
                self._consecutive_bad = 0
                if msg is not None:
                    await self._dispatch(msg)
        except NoiseError as exc:
            reason = f"secure channel broken: {exc}"
            log.error("%s: %s", self.url, reason)
        except asyncio.IncompleteReadError:
            reason = "pool closed the connection"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug behind a callback must not leave a half-dead session
            log.exception("%s: internal error while handling a pool message", self.url)
            reason = f"internal error: {exc!r}"
        await self.close(reason)

    async def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, SubmitSharesSuccess | SubmitSharesError | NewMiningJob | SetNewPrevHash | SetTarget
                      | SetExtranoncePrefix | CloseChannel | ChannelEndpointChanged) \
                and msg.channel_id != self.channel_id:
            self.bad_messages += 1
            log.warning("%s: %s for unknown channel %d ignored", self.url, type(msg).__name__, msg.channel_id)
            return
        if isinstance(msg, SubmitSharesSuccess):
            self._acknowledge(msg)
        elif isinstance(msg, SubmitSharesError):
            self._reject(msg)
        elif isinstance(msg, NewMiningJob):
            self._new_job(msg)
        elif isinstance(msg, SetNewPrevHash):
            self._new_prev_hash(msg)
        elif isinstance(msg, SetTarget):
            self._set_target(msg.maximum_target)
        elif isinstance(msg, SetExtranoncePrefix):
            # New work identity: shares found for the old prefix belong to the old session.
            self.extranonce1 = msg.extranonce_prefix
            self.session_id = msg.extranonce_prefix.hex()
        elif isinstance(msg, Reconnect):
            await self._handle_reconnect(msg)
        elif isinstance(msg, CloseChannel):
            await self.close(f"pool closed the channel: {msg.reason_code}")
        else:
            self.bad_messages += 1
            log.info("%s: unexpected %s ignored", self.url, type(msg).__name__)

    def _set_target(self, raw: bytes) -> None:
        target = u256_to_int(raw)
        if target <= 0:
            self.bad_messages += 1
            log.warning("%s: SetTarget with a zero target ignored", self.url)
            return
        self.target = target
        self.difficulty = target_to_difficulty(target)
        # The agent derives its share target from the difficulty: keep it at least as strict as the pool's.
        while difficulty_to_target(self.difficulty) > target:
            self.difficulty = math.nextafter(self.difficulty, math.inf)
        if self._on_difficulty:
            self._on_difficulty(self, self.difficulty)

    def _new_job(self, msg: NewMiningJob) -> None:
        if msg.min_ntime is None:
            self._future_jobs[msg.job_id] = msg
            while len(self._future_jobs) > MAX_PENDING_JOBS:
                self._future_jobs.pop(next(iter(self._future_jobs)))
            return
        if self._prev is None:
            self.bad_messages += 1
            log.warning("%s: active job %d before any SetNewPrevHash ignored", self.url, msg.job_id)
            return
        self._activate(msg, self._prev, msg.min_ntime, clean=False)

    def _new_prev_hash(self, msg: SetNewPrevHash) -> None:
        job = self._future_jobs.pop(msg.job_id, None)
        if job is None:
            self.bad_messages += 1
            log.warning("%s: SetNewPrevHash for unknown future job %d ignored", self.url, msg.job_id)
            return
        self._prev = msg
        self._future_jobs.clear()  # only the referenced job is valid now (sv2-spec 5.3.17)
        self._activate(job, msg, msg.min_ntime, clean=True)

    def _activate(self, job: NewMiningJob, prev: SetNewPrevHash, ntime: int, *, clean: bool) -> None:
        stratum = StandardJob(str(job.job_id), prev.prev_hash, b"", b"", (), job.version, prev.nbits, ntime,
                              clean, fixed_merkle_root=job.merkle_root)
        self.last_job = stratum
        self.jobs_received += 1
        if self._on_job:
            self._on_job(self, stratum)

    async def _handle_reconnect(self, msg: Reconnect) -> None:
        host = msg.new_host or self.url.host
        port = msg.new_port or self.url.port
        if host != self.url.host and host not in self.options.allowed_reconnect_hosts:
            log.warning("%s: refused Reconnect to unlisted host %s:%d", self.url, host, port)
            return
        # The new server must present a certificate from the same authority (the URL keeps the key).
        self.reconnect_target = (host, port)
        await self.close(f"pool asked to reconnect to {host}:{port}")


def reconnect_url(url: Sv2PoolUrl, target: tuple[str, int]) -> Sv2PoolUrl:
    return dataclasses.replace(url, host=target[0], port=target[1])
