"""The local pool's Stratum V2 front end: the same chain, jobs, vardiff and share validation as V1.

Each connection runs the Noise NX handshake as responder, presenting a static key certified by the pool's
authority key (``mos pool keygen``). Standard channels get header-only jobs (``NewMiningJob`` with the
merkle root computed for the channel's extranonce prefix); extended channels (proxies) get
``NewExtendedMiningJob`` with the coinbase halves and merkle path. Shares go through
``LocalPool.accept_share`` -- the very function V1 submits use -- so workers are counted identically on
both protocols. Every message is hostile until validated: a malformed message is answered or counted,
repeated garbage or a MAC failure closes the connection, and per-connection channel counts are capped.
The handshake, the receive loop and the limits are those of every SV2 port (``sv2_listener``):
SetupConnection within ``setup_timeout``, no frame larger than the messages a miner may send (1,291 bytes
before SetupConnection), large frames of all connections within one budget, and at most the V1 port's
``max_connections`` open.

Successful submits are acknowledged one by one unless ``ack_every``/``ack_after_s`` are given: then one
``SubmitShares.Success`` covers a batch (every ``ack_every`` accepted submits, or ``ack_after_s`` seconds after
the oldest unacknowledged one), as the specification allows ("acknowledges every 10 successful submissions").
Errors are always sent at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from dataclasses import dataclass, field

from openmos.bitcoin import BlockHeader, difficulty_to_target, target_to_difficulty
from openmos.bitcoin.hashing import sha256d
from openmos.bitcoin.merkle import merkle_root_from_branch
from openmos.pool.jds import DeclarationRejected, DeclaredJob, JobDeclarator
from openmos.pool.server import LocalPool, PoolJob, WorkerStats
from openmos.pool.sv2_listener import ServedConnection, Sv2Listener
from openmos.pool.v1_session import ShareRejected
from openmos.pool.vardiff import next_difficulty
from openmos.stratum.protocol import StratumErrorCode
from openmos.stratum.v2.codec import int_to_u256, u256_to_int
from openmos.stratum.v2.messages import (
    PROTOCOL_MINING,
    REQUIRES_FIXED_VERSION,
    REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING,
    REQUIRES_WORK_SELECTION,
    CloseChannel,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
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
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
    largest_payload,
)
from openmos.stratum.v2.noise import KeyPair, encode_authority_key
from openmos.stratum.v2.transport import Sv2Connection

log = logging.getLogger(__name__)

BIP323_MASK = 0x1FFFFFE0
MAX_CHANNELS_PER_CONNECTION = 256
# The largest message a set-up miner or proxy may send (~74 KB: a SetCustomMiningJob with 64 KiB of outputs).
POOL_MAX_PAYLOAD = largest_payload(OpenStandardMiningChannel, OpenExtendedMiningChannel, UpdateChannel, CloseChannel,
                                   SubmitSharesStandard, SubmitSharesExtended, SetCustomMiningJob)
ERROR_CODES = {
    StratumErrorCode.JOB_NOT_FOUND: "stale-share",
    StratumErrorCode.DUPLICATE_SHARE: "duplicate-share",
    StratumErrorCode.LOW_DIFFICULTY: "difficulty-too-low",
    StratumErrorCode.UNAUTHORIZED: "unauthorized",
}


@dataclass(eq=False)
class _Channel:
    channel_id: int
    worker: str
    stats: WorkerStats
    extranonce1: bytes
    extended: bool
    extranonce_size: int  # bytes the client rolls (extended channels); 0 for standard
    difficulty: float
    max_target: int
    nominal_hash_rate: float = 0.0
    prev_hash: bytes = b""
    job_difficulty: dict[str, float] = field(default_factory=dict)
    merkle_roots: dict[str, bytes] = field(default_factory=dict)  # standard channels: root sent per job
    window_start: float = 0.0
    window_shares: int = 0
    accepted: int = 0
    rejected: int = 0
    # Accepted submits not yet acknowledged (batched acknowledgements): count, difficulty sum, newest sequence
    # number, and the timer that acknowledges them after ``ack_after_s``.
    unacked: int = 0
    unacked_sum: float = 0.0
    last_sequence: int = 0
    ack_timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Connection(ServedConnection):
    channels: dict[int, _Channel] = field(default_factory=dict)


class Sv2PoolServer(Sv2Listener[_Connection]):
    """Stratum V2 beside a running ``LocalPool``. ``await start()``; ``await stop()``."""

    name = "pool v2"
    max_payload = POOL_MAX_PAYLOAD

    def __init__(self, pool: LocalPool, authority_secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 cert_validity_s: int = 86_400, setup_timeout: float = 10.0,
                 declarator: JobDeclarator | None = None, ack_every: int = 1, ack_after_s: float = 0.0) -> None:
        if not 1 <= ack_every <= 1_000_000:
            raise ValueError(f"ack_every must be 1..1000000 submits, not {ack_every}")
        if not (math.isfinite(ack_after_s) and 0.0 <= ack_after_s <= 3600.0):
            raise ValueError(f"ack_after_s must be 0..3600 s, not {ack_after_s}")
        self.ack_every, self.ack_after_s = ack_every, ack_after_s
        super().__init__(authority_secret, host, port, setup_timeout, cert_validity_s=cert_validity_s,
                         max_connections=pool.settings.max_connections)
        self.pool = pool
        self.declarator = declarator  # set: custom jobs (SetCustomMiningJob) on extended channels
        self._custom: dict[str, tuple[DeclaredJob, _Channel]] = {}
        self.connections: set[_Connection] = set()
        self._channel_ids = itertools.count(1)

    @property
    def authority_key(self) -> str:
        return encode_authority_key(self.authority.xonly)

    @property
    def url(self) -> str:
        return f"stratum2+tcp://{self.host}:{self.port}/{self.authority_key}"

    async def start(self) -> None:
        self.pool.job_listeners.append(self._on_job)
        await super().start()
        log.info("local pool speaks Stratum V2 on %s", self.url)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.pool.job_listeners.remove(self._on_job)
        await super().stop()

    # -- connections ------------------------------------------------------------------------------

    def _opened(self, conn: Sv2Connection) -> _Connection:
        state = _Connection(conn)
        self.connections.add(state)
        return state

    def _timeout(self, state: _Connection) -> float:
        return self.pool.settings.idle_timeout

    def _closed(self, state: _Connection) -> None:
        self.connections.discard(state)
        for channel in state.channels.values():
            if channel.ack_timer is not None:
                channel.ack_timer.cancel()
            self.pool.release_extranonce1(channel.extranonce1)

    def _dispatch(self, state: _Connection, msg: Message) -> bool:
        """Handle one message; False closes the connection."""
        if state.setup is None:
            return self._on_setup(state, msg)
        if isinstance(msg, SubmitSharesStandard | SubmitSharesExtended):
            self._on_submit(state, msg)
        elif isinstance(msg, OpenStandardMiningChannel | OpenExtendedMiningChannel):
            self._on_open(state, msg)
        elif isinstance(msg, UpdateChannel):
            self._on_update(state, msg)
        elif isinstance(msg, CloseChannel):
            channel = state.channels.pop(msg.channel_id, None)
            if channel is not None:
                self._acknowledge(state, channel)  # what was accepted is still acknowledged
                self.pool.release_extranonce1(channel.extranonce1)
        elif isinstance(msg, SetCustomMiningJob):
            self._on_custom_job(state, msg)
        else:
            return self._unexpected(state, msg)
        return True

    def _on_setup(self, state: _Connection, msg: Message) -> bool:
        if not isinstance(msg, SetupConnection):
            self.protocol_errors += 1
            return False  # SetupConnection MUST be the first message
        if msg.protocol != PROTOCOL_MINING or not msg.min_version <= 2 <= msg.max_version:
            state.conn.write(SetupConnectionError(0, "unsupported-protocol" if msg.protocol != PROTOCOL_MINING
                                                  else "protocol-version-mismatch"))
            return False
        fixed = self.pool.settings.version_mask == 0
        selection = 0 if self.declarator is not None else REQUIRES_WORK_SELECTION
        not_supported = selection | (REQUIRES_VERSION_ROLLING if fixed else 0)
        if msg.flags & not_supported:
            # The error carries the full set of flags this server does not support (sv2-spec 3.6.3).
            state.conn.write(SetupConnectionError(not_supported, "unsupported-feature-flags"))
            return False
        state.setup = msg
        state.conn.write(SetupConnectionSuccess(2, REQUIRES_FIXED_VERSION if fixed else 0))
        return True

    # -- channels ---------------------------------------------------------------------------------

    def _on_open(self, state: _Connection, msg: OpenStandardMiningChannel | OpenExtendedMiningChannel) -> None:
        conn = state.conn
        extended = isinstance(msg, OpenExtendedMiningChannel)
        setup = state.setup
        assert setup is not None
        if extended and setup.flags & REQUIRES_STANDARD_JOBS:
            conn.write(OpenMiningChannelError(msg.request_id, "standard-jobs-required-by-setup"))
            return
        if not msg.user_identity or any(ord(c) < 32 for c in msg.user_identity):
            conn.write(OpenMiningChannelError(msg.request_id, "invalid-user-identity"))
            return
        if len(state.channels) >= MAX_CHANNELS_PER_CONNECTION:
            conn.write(OpenMiningChannelError(msg.request_id, "too-many-channels"))
            return
        if not self.pool.has_room_for(msg.user_identity):
            conn.write(OpenMiningChannelError(msg.request_id, "too-many-workers"))
            return
        size = self.pool.settings.extranonce2_size
        if isinstance(msg, OpenExtendedMiningChannel) and msg.min_extranonce_size > size:
            conn.write(OpenMiningChannelError(msg.request_id, "min-extranonce-size-too-large"))
            return
        max_target = u256_to_int(msg.max_target)
        difficulty = self.pool.settings.start_difficulty
        if max_target <= 0:
            conn.write(OpenMiningChannelError(msg.request_id, "max-target-out-of-range"))
            return
        difficulty = max(difficulty, target_to_difficulty(max_target))
        channel = _Channel(next(self._channel_ids) & 0xFFFFFFFF, msg.user_identity,
                           self.pool.register_worker(msg.user_identity), self.pool.new_extranonce1(), extended,
                           size if extended else 0, difficulty, max_target,
                           msg.nominal_hash_rate if msg.nominal_hash_rate >= 0 else 0.0,
                           window_start=self.pool.clock())
        state.channels[channel.channel_id] = channel
        target = int_to_u256(min(difficulty_to_target(difficulty), (1 << 256) - 1))
        if isinstance(msg, OpenExtendedMiningChannel):
            conn.write(OpenExtendedMiningChannelSuccess(msg.request_id, channel.channel_id, target, size,
                                                        channel.extranonce1, 0))
        else:
            conn.write(OpenStandardMiningChannelSuccess(msg.request_id, channel.channel_id, target,
                                                        self._prefix(channel), 0))
        self.peer_log.log(logging.INFO, "channel", "pool v2: %s channel %d for %s",
                          "extended" if extended else "standard", channel.channel_id, channel.worker)
        self._send_job(state, channel, self.pool.current_job(), activate_prev=True)

    def _prefix(self, channel: _Channel) -> bytes:
        """A standard channel's extranonce_prefix: the whole extranonce (its en1 + zero en2)."""
        return channel.extranonce1 + bytes(self.pool.settings.extranonce2_size)

    def _on_update(self, state: _Connection, msg: UpdateChannel) -> None:
        channel = state.channels.get(msg.channel_id)
        if channel is None:
            state.conn.write(UpdateChannelError(msg.channel_id, "invalid-channel-id"))
            return
        channel.nominal_hash_rate = msg.nominal_hash_rate if msg.nominal_hash_rate >= 0 else 0.0
        requested = u256_to_int(msg.maximum_target)
        if requested <= 0:
            state.conn.write(UpdateChannelError(msg.channel_id, "max-target-out-of-range"))
            return
        channel.max_target = requested
        if difficulty_to_target(channel.difficulty) > requested:  # MUST honour a lower maximum target
            self._retarget(state, channel, target_to_difficulty(requested))

    # -- jobs -------------------------------------------------------------------------------------

    def _on_job(self, job: PoolJob) -> None:
        for state in list(self.connections):
            for channel in state.channels.values():
                self._maybe_vardiff(state, channel)
                self._send_job(state, channel, job, activate_prev=False)

    def _send_job(self, state: _Connection, channel: _Channel, job: PoolJob, *, activate_prev: bool) -> None:
        t = job.template
        job_id = int(job.job_id, 16) & 0xFFFFFFFF
        new_prev = activate_prev or t.prev_hash != channel.prev_hash
        channel.prev_hash = t.prev_hash
        channel.job_difficulty[job.job_id] = channel.difficulty
        if len(channel.job_difficulty) > self.pool.settings.max_jobs * 2:
            for key in [k for k in channel.job_difficulty if self.pool.find_job(k) is None]:
                del channel.job_difficulty[key]
                channel.merkle_roots.pop(key, None)
        min_ntime = None if new_prev else t.ntime
        conn = state.conn
        if channel.extended:
            rolling = self.pool.settings.version_mask != 0
            conn.write(NewExtendedMiningJob(channel.channel_id, job_id, min_ntime, t.version, rolling,
                                            t.merkle_branch, t.coinb1, t.coinb2))
        else:
            coinbase = t.coinb1 + self._prefix(channel) + t.coinb2
            root = merkle_root_from_branch(sha256d(coinbase), t.merkle_branch)
            channel.merkle_roots[job.job_id] = root
            conn.write(NewMiningJob(channel.channel_id, job_id, min_ntime, t.version, root))
        if new_prev:
            conn.write(SetNewPrevHash(channel.channel_id, job_id, t.prev_hash, t.ntime, t.bits))

    def _on_custom_job(self, state: _Connection, msg: SetCustomMiningJob) -> None:
        """A miner's own template (declared to our JDS first) becomes a job on its extended channel."""
        channel = state.channels.get(msg.channel_id)
        error = None
        if self.declarator is None:
            error = "work-selection-disabled"
        elif channel is None or not channel.extended:
            error = "invalid-channel-id"
        if error is not None or self.declarator is None or channel is None:
            state.conn.write(SetCustomMiningJobError(msg.channel_id, msg.request_id, error or "?"))
            return
        try:
            template = self.declarator.custom_template(msg, channel.extranonce1, channel.extranonce_size)
        except DeclarationRejected as exc:
            self.peer_log.log(logging.INFO, "custom-refused", "pool v2: custom job from %s refused: %s", channel.worker,
                              exc)
            state.conn.write(SetCustomMiningJobError(msg.channel_id, msg.request_id, exc.code))
            return
        job = self.pool.add_custom_job(template)
        channel.job_difficulty[job.job_id] = channel.difficulty
        self._custom[job.job_id] = (self.declarator.jobs[msg.mining_job_token], channel)
        for old in [k for k in self._custom if self.pool.find_job(k) is None]:
            del self._custom[old]
        state.conn.write(SetCustomMiningJobSuccess(msg.channel_id, msg.request_id, int(job.job_id, 16)))

    # -- shares -----------------------------------------------------------------------------------

    def _on_submit(self, state: _Connection, msg: SubmitSharesStandard | SubmitSharesExtended) -> None:
        conn = state.conn
        channel = state.channels.get(msg.channel_id)
        if channel is None:
            conn.write(SubmitSharesError(msg.channel_id, msg.sequence_number, "invalid-channel-id"))
            return
        if isinstance(msg, SubmitSharesExtended) != channel.extended:
            conn.write(SubmitSharesError(msg.channel_id, msg.sequence_number, "wrong-submit-for-channel-type"))
            return
        job = self.pool.find_job(f"{msg.job_id:x}")
        if job is None:
            self.pool.count_rejection("job not found (stale)")
            channel.stats.stale += 1
            channel.rejected += 1
            conn.write(SubmitSharesError(msg.channel_id, msg.sequence_number, "stale-share"))
            return
        mask = BIP323_MASK if self.pool.settings.version_mask else 0
        if (msg.version ^ job.template.version) & ~mask & 0xFFFFFFFF:
            channel.stats.rejected += 1
            channel.rejected += 1
            conn.write(SubmitSharesError(msg.channel_id, msg.sequence_number, "invalid-version"))
            return
        size = self.pool.settings.extranonce2_size
        if isinstance(msg, SubmitSharesExtended):
            if len(msg.extranonce) != channel.extranonce_size:
                channel.stats.rejected += 1
                channel.rejected += 1
                conn.write(SubmitSharesError(msg.channel_id, msg.sequence_number, "invalid-extranonce-size"))
                return
            en2 = msg.extranonce
        else:
            en2 = bytes(size)
        required = min(channel.job_difficulty.get(job.job_id, channel.difficulty), channel.difficulty)
        try:
            share = self.pool.accept_share(channel.worker, channel.stats, job, channel.extranonce1, en2, msg.ntime,
                                           msg.nonce, msg.version, required,
                                           None if channel.extended else channel.merkle_roots.get(job.job_id))
        except ShareRejected as exc:
            channel.rejected += 1
            conn.write(SubmitSharesError(msg.channel_id, msg.sequence_number, ERROR_CODES.get(exc.code, str(exc))))
            return
        custom = self._custom.get(job.job_id)
        if share.is_block and custom is not None and self.declarator is not None and self.pool.chain.tip == share.hash:
            self.declarator.record_block(custom[0], BlockHeader.parse(share.header), channel.extranonce1 + en2)
        channel.accepted += 1
        channel.window_shares += 1
        channel.unacked += 1
        channel.unacked_sum += required
        channel.last_sequence = msg.sequence_number
        if channel.unacked >= self.ack_every:
            self._acknowledge(state, channel)
        elif self.ack_after_s and channel.ack_timer is None:
            channel.ack_timer = asyncio.get_running_loop().call_later(self.ack_after_s, self._acknowledge, state,
                                                                      channel)
        if not share.is_block:
            self._maybe_vardiff(state, channel)

    def _acknowledge(self, state: _Connection, channel: _Channel) -> None:
        """One ``SubmitShares.Success`` for every accepted submit not yet acknowledged on ``channel``."""
        if channel.ack_timer is not None:
            channel.ack_timer.cancel()
            channel.ack_timer = None
        if channel.unacked and state in self.connections:
            state.conn.write(SubmitSharesSuccess(channel.channel_id, channel.last_sequence, channel.unacked,
                                                 max(0, round(channel.unacked_sum))))
        channel.unacked, channel.unacked_sum = 0, 0.0

    def _maybe_vardiff(self, state: _Connection, channel: _Channel) -> None:
        vd = self.pool.settings.vardiff
        if vd is None:
            return
        now = self.pool.clock()
        new = next_difficulty(channel.difficulty, channel.window_shares, now - channel.window_start, vd)
        if new is not None:
            self._retarget(state, channel, new)

    def _retarget(self, state: _Connection, channel: _Channel, difficulty: float) -> None:
        difficulty = max(difficulty, target_to_difficulty(channel.max_target))
        channel.difficulty = difficulty
        channel.window_start, channel.window_shares = self.pool.clock(), 0
        target = min(difficulty_to_target(difficulty), channel.max_target)
        state.conn.write(SetTarget(channel.channel_id, int_to_u256(target)))


def generate_authority_key() -> tuple[bytes, str]:
    """A new authority secret and its public key in URL form."""
    pair = KeyPair.generate()
    return pair.secret, encode_authority_key(pair.xonly)


