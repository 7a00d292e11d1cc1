"""Pool groups with failover inside a group and a quota split between groups.

Inside a group the pools are in priority order: the agent mines on the first one that answers, fails over
when it dies or stalls, and keeps probing the better ones so it falls back as soon as they return.
Failover is also on *quality*: a pool that sends too many bad messages, no valid job soon after
connecting, or rejects too many shares is marked bad for a back-off period that doubles each time it
fails again (reset after a healthy session), and the next pool gets the work.
A *hot standby* -- the next usable pool of the group, connected and authorised -- is kept ready. When the
pool in use leaves a request unanswered and sends nothing at all for ``stall_suspect_s`` (at least three times
its recent slowest answer, so a slow but healthy pool is not left), a stall is *suspected*. The request is a
share, or, when no share is at stake, a *liveness probe*: a pool silent for ``stall_probe_s`` with nothing
outstanding gets one cheap request (``stall_probe_method``, at most one per interval, only while a standby or a
better pool could take the work, and only on a session whose pool has answered it before). On suspicion the
work moves to the standby at once (on the last pool of the group, the better ones are tried at once instead),
while the suspected session is kept open, its unanswered shares still waiting for their
answer (or re-sent if the session is resumed). If it answers again the usual fallback rules bring the work
back; only ``stall_timeout_s`` (or ``response_timeout_s`` for a share) confirms it dead.
A share found for a still-valid job is never silently dropped. Shares found for a session that then went
away -- and shares whose submit was written but never answered -- are kept in that pool's outbox and
re-sent once the pool resumes the same session (``mining.subscribe`` with the previous session id gives back
the same extranonce1, so the job ids and the share itself stay valid). When the pool cannot resume it, they
are counted and logged as *unrecoverable (pool lost the session)*, never redirected: a share is only valid
for the session it was mined for. A re-sent share the pool answers as a duplicate had reached it before the
drop (only its answer was lost): counted apart, not as a rejection. The extranonce2 sequence continues
across a resumed session, so the agent never mines the same header twice. A share whose block has been
superseded (the pool announced a new previous-block hash) is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from openmos.base.logs import LogLimiter
from openmos.base.ratelimit import TokenBucket
from openmos.base.tasks import cancel_and_wait
from openmos.miner.config import (
    MAX_POOLS_PER_GROUP,
    ConfigError,
    PoolEndpoint,
    PoolGroupConfig,
    StratumTuning,
)
from openmos.stratum.client import ClientOptions, PoolUnavailable, ShareCounters, StratumClient, SubmitResult
from openmos.stratum.difficulty import DifficultyRange
from openmos.stratum.job import Share, StratumJob
from openmos.stratum.session import PoolSession
from openmos.stratum.url import PoolUrl
from openmos.stratum.v2.client import Sv2Client
from openmos.stratum.v2.url import Sv2PoolUrl, parse_pool_url

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 1024
HEALTHY_AFTER_S = 30.0  # a session that ran this long with valid jobs and no quality problem resets back-off
SUBMIT_BURST = 50.0  # token-bucket burst above the governed share rate
BAD_MESSAGE_WINDOW_S = 60.0  # max_bad_messages within any (sliding) window of this length: failover


@dataclass(frozen=True)
class SessionPolicy:
    """What the agent derives from its hardware for every pool session."""

    suggest_difficulty: float | None = None  # asked of the pool at connect; None: do not ask
    difficulty_range: DifficultyRange = field(default_factory=DifficultyRange)  # outside it: refused


# What became of a share handed to PoolGroup.submit (told to its FateListener, possibly more than once:
# "queued" first, then what happened when its session came back).
ANSWERED = "answered"  # the pool answered (the SubmitResult says how)
QUEUED = "queued"  # kept until its session is back
SUPERSEDED = "superseded"  # its block was superseded before it could be sent: never sent
THROTTLED = "throttled"  # over the submit rate limit: dropped
UNRECOVERABLE = "unrecoverable"  # the pool did not resume its session
LOST = "lost"  # the outbox overflowed
RESENT_DUPLICATE = "resent duplicate"  # re-sent after a drop; the pool already had it
FateListener = Callable[[str, "SubmitResult | None"], None]


@dataclass
class PendingShare:
    share: Share
    extranonce1: bytes
    found_at: float
    prev_hash: bytes
    written: bool = False  # the submit went out but its answer was lost with the connection
    on_fate: FateListener | None = None

    def fate(self, fate: str, result: SubmitResult | None = None) -> None:
        if self.on_fate is not None:
            self.on_fate(fate, result)


@dataclass
class PoolConnection:
    """One configured pool endpoint and everything the agent knows about it."""

    endpoint: PoolEndpoint
    priority: int
    url: PoolUrl | Sv2PoolUrl = field(init=False)
    client: PoolSession | None = None
    session_id: str | None = None
    outbox: deque[PendingShare] = field(default_factory=deque)  # at most OUTBOX_LIMIT
    counters: ShareCounters = field(default_factory=ShareCounters)
    lost_shares: int = 0  # dropped by the agent itself (outbox full): should stay 0
    unrecoverable: int = 0  # found for a session the pool did not resume (pool lost the session)
    resubmitted: int = 0
    resent_duplicates: int = 0  # re-sent shares the pool already had (only its first answer was lost)
    last_extranonce1: bytes = b""  # of the newest session: a reconnect that gets it back resumed it
    resumed_sessions: int = 0
    difficulty_refused: int = 0  # set_difficulty values refused over this pool's ended sessions
    difficulty_governed: int = 0  # accepted values the share-rate governor had to raise (ended sessions)
    difficulty_slow: int = 0  # accepted values meaning one share per more than slow_share_hours (ended sessions)
    _en2: tuple[bytes | None, itertools.count[int]] = field(default_factory=lambda: (None, itertools.count()),
                                                            repr=False)
    connects: int = 0
    last_error: str = ""
    enabled: bool = True
    tip: bytes = b""  # previous-block hash of the newest job from this pool's current session
    stale_dropped: int = 0  # shares for a superseded block, never sent
    throttled: int = 0  # shares over the submit rate limit, dropped
    quality_failures: int = 0
    backoff_s: float = 0.0  # current back-off after a failure (doubles, reset by a healthy session)
    bad_until: float = 0.0  # monotonic time before which this pool is not tried
    answer_s: float = 0.0  # slowest recent share answer (decays 10 % per answer): how slow the pool normally is
    probes: int = 0  # liveness probes sent over this pool's ended sessions (see probe_counts)
    probe_answers: int = 0  # of them answered
    last_probe: float = 0.0  # monotonic
    stall_suspicions: int = 0  # times the work left this pool on a suspected stall
    # V2 batched acknowledgements seen on the last session (Sv2Client.ack_batch / ack_wait_s): the next session
    # starts from them, so a pool's batching is learnt once, not again after every reconnect
    ack_batch: int = 0
    ack_wait_s: float = 0.0

    def probe_counts(self) -> tuple[int, int]:
        """Liveness probes sent and answered over every session of this pool, the open one included (the
        handshake's ``mining.extranonce.subscribe`` is the first of each session; see PoolGroup._maybe_probe)."""
        c = self.client
        live = c is not None and not c.closed.is_set()
        return (self.probes + (getattr(c, "probes_sent", 0) if live else 0),
                self.probe_answers + (getattr(c, "probe_answers", 0) if live else 0))

    def in_backoff(self, now: float) -> bool:
        return now < self.bad_until

    def extranonce2_counter(self, extranonce1: bytes) -> itertools.count[int]:
        """The extranonce2 sequence of this session: it continues when the session is resumed."""
        if self._en2[0] != extranonce1:
            self._en2 = (extranonce1, itertools.count())
        return self._en2[1]

    def queue(self, item: PendingShare) -> None:
        """Keep a share until its session is back (bounded: beyond OUTBOX_LIMIT the oldest is lost, counted)."""
        if len(self.outbox) >= OUTBOX_LIMIT:
            self.outbox.popleft().fate(LOST)
            self.lost_shares += 1
            log.warning("%s: more than %d shares waiting for the pool; the oldest is lost", self.url, OUTBOX_LIMIT)
        self.outbox.append(item)
        item.fate(QUEUED)

    def __post_init__(self) -> None:
        self.url = parse_pool_url(self.endpoint.url)

    @property
    def alive(self) -> bool:
        return self.client is not None and not self.client.closed.is_set() and self.client.authorized

    @property
    def status(self) -> str:
        return "Alive" if self.alive else "Dead"


JobListener = Callable[["PoolGroup", PoolConnection, PoolSession, StratumJob], None]


class PoolGroup:
    """Failover among the pools of one group."""

    def __init__(self, config: PoolGroupConfig, tuning: StratumTuning, agent_name: str,
                 on_job: JobListener, on_switch: Callable[[PoolGroup], None],
                 policy: SessionPolicy | None = None) -> None:
        self.config = config
        self.tuning = tuning
        self.agent_name = agent_name
        self.policy = policy or SessionPolicy()
        self.submit_limit = TokenBucket(rate=3 * tuning.max_share_rate, burst=SUBMIT_BURST)
        self._log = LogLimiter(log, interval=10.0, burst=10)
        # Bad messages of the session being held: how many were seen, and when the latest ones were noticed (the
        # last max_bad_messages times: enough to tell whether that many fell within any window).
        self._bad_seen: tuple[PoolSession | None, int] = (None, 0)
        self._bad_times: deque[float] = deque(maxlen=tuning.max_bad_messages)
        self.connections = [PoolConnection(ep, i) for i, ep in enumerate(config.pools)]
        self.active: PoolConnection | None = None
        self.switches = 0
        self.work_issued = 0
        self.quota_level = 0.0  # work issued / quota, without credit for time the group could not mine
        self._on_job = on_job
        self._on_switch = on_switch
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._standby_task: asyncio.Task[None] | None = None
        self.stall_suspicions = 0  # times the work moved to the hot standby on a suspected stall

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def quota(self) -> int:
        return self.config.quota

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"pool-group {self.name}")

    async def stop(self) -> None:
        for task in (self._task, self._standby_task):
            await cancel_and_wait(task)
        for conn in self.connections:
            if conn.client is not None:
                await conn.client.close("agent stopping")

    @property
    def suggest_difficulty(self) -> float | None:
        """The start difficulty asked of pools: the configured one, else the hardware-derived one (0: none)."""
        configured = self.tuning.suggest_difficulty
        value = self.policy.suggest_difficulty if configured is None else configured
        return value or None

    def _credentials(self, conn: PoolConnection) -> tuple[str, str]:
        """Worker name and password, with the suggested difficulty in them if the operator asked for that."""
        user, password, diff = conn.endpoint.user, conn.endpoint.password, self.suggest_difficulty
        if diff is not None and self.tuning.difficulty_suffix == "user":
            user = f"{user}+{diff:g}"
        elif diff is not None and self.tuning.difficulty_suffix == "password":
            password = f"d={diff:g}" if password in ("", "x") else f"{password},d={diff:g}"
        return user, password

    def _options(self, conn: PoolConnection) -> ClientOptions:
        return ClientOptions(
            agent=self.agent_name,
            version_mask=0x1FFFE000 if self.tuning.version_rolling else 0,
            suggest_difficulty=self.suggest_difficulty,
            response_timeout=self.tuning.response_timeout_s,
            probe_method=self.tuning.stall_probe_method if self.tuning.stall_probe_s else "",
            allowed_reconnect_hosts=frozenset(self.tuning.allowed_reconnect_hosts),
            session_id=conn.session_id,
            ssl_context=ssl.create_default_context(cafile=conn.endpoint.tls_ca_file) if conn.endpoint.tls_ca_file
            else None,
            difficulty_range=self.policy.difficulty_range,
        )

    async def _connect(self, conn: PoolConnection) -> PoolSession | None:
        target = conn.client.reconnect_target if conn.client is not None else None
        client: PoolSession
        user, password = self._credentials(conn)
        if isinstance(conn.url, Sv2PoolUrl):  # same authority key after a Reconnect
            url2 = dataclasses.replace(conn.url, host=target[0], port=target[1]) if target else conn.url
            client = Sv2Client(url2, user, password, self._options(conn),
                               on_job=lambda c, job: self._job(conn, c, job),
                               on_close=lambda c, reason: self._closed(conn, c))
            client.ack_batch, client.ack_wait_s = conn.ack_batch, conn.ack_wait_s
        else:
            url = PoolUrl(target[0], target[1], conn.url.tls) if target else conn.url
            client = StratumClient(
                url, user, password, self._options(conn),
                on_job=lambda c, job: self._job(conn, c, job),
                on_close=lambda c, reason: self._closed(conn, c),
            )
        try:
            await client.connect()
        except PoolUnavailable as exc:
            conn.last_error = str(exc)
            # Hung up during the handshake without a word (a pool restarting, a proxy or load balancer with no
            # pool behind it): down, not bad -- retried like an unreachable pool, not backed off for minutes.
            down = getattr(client, "hung_up", False) and client.last_receive == client.connected_at
            if client.connected_at and not down:  # it answered, then failed the handshake: a quality failure
                conn.quality_failures += 1
                self._back_off(conn, str(exc), self.tuning.max_backoff_s)
            else:  # unreachable: retry at least every fallback interval so a recovered pool is used soon
                self._back_off(conn, str(exc), self.tuning.fallback_interval_s)
            return None
        conn.connects += 1
        return client

    def _closed(self, conn: PoolConnection, client: PoolSession) -> None:
        conn.difficulty_refused += getattr(client, "difficulty_rejections", 0)
        conn.difficulty_governed += getattr(client, "difficulty_governed", 0)
        conn.difficulty_slow += getattr(client, "difficulty_slow", 0)
        conn.probes += getattr(client, "probes_sent", 0)
        conn.probe_answers += getattr(client, "probe_answers", 0)
        if isinstance(client, Sv2Client):
            conn.ack_batch, conn.ack_wait_s = client.ack_batch, client.ack_wait_s
        self._wake.set()

    def _back_off(self, conn: PoolConnection, why: str, cap: float) -> None:
        """Do not try this pool again for a while; the wait doubles with every consecutive failure."""
        conn.backoff_s = min(cap, max(self.tuning.retry_delay_s, 2 * conn.backoff_s))
        conn.bad_until = time.monotonic() + conn.backoff_s
        self._log.log(logging.WARNING, f"backoff {conn.url}", "pool %s: %s; not retried for %.0f s",
                      conn.url, why, conn.backoff_s)

    def _job(self, conn: PoolConnection, client: PoolSession, job: StratumJob) -> None:
        if conn.client is client:
            conn.tip = job.prev_hash
        if self.active is conn and conn.client is client:
            self._on_job(self, conn, client, job)

    async def _supervise(self) -> None:
        while True:
            conn, client = await self._connect_best(len(self.connections))
            if conn is None or client is None:
                await asyncio.sleep(self._idle_wait())
                continue
            self._activate(conn, client)
            await self._hold(conn, client)

    def _idle_wait(self) -> float:
        """No pool could be used: wait until the first back-off ends (at least a moment, at most retry)."""
        now = time.monotonic()
        waits = [c.bad_until - now for c in self.connections if c.enabled and c.in_backoff(now)]
        if len(waits) < sum(c.enabled for c in self.connections):
            return self.tuning.retry_delay_s
        return min(max(0.05, min(waits)), self.tuning.max_backoff_s)

    async def _connect_best(self, limit: int) -> tuple[PoolConnection | None, PoolSession | None]:
        """Connect to the highest-priority usable pool among the first ``limit`` that answers."""
        for conn in self.connections[:limit]:
            now = time.monotonic()
            if not conn.enabled or conn.in_backoff(now):
                continue
            if conn is not self.active and conn.client is not None and not conn.client.closed.is_set():
                if self._ready(conn, now):  # the hot standby, or a suspected session that answers again
                    return conn, conn.client
                continue  # suspected or still shaking hands: no second session to the same pool meanwhile
            client = await self._connect(conn)
            if client is not None:
                return conn, client
        return None, None

    def quality_problem(self, client: PoolSession, now: float | None = None) -> str | None:
        """Why this session should be abandoned for the next pool, or None while it is fine."""
        tuning = self.tuning
        now = time.monotonic() if now is None else now
        if self._bad_window_full(client, now):
            return f"{tuning.max_bad_messages} bad messages from the pool within {BAD_MESSAGE_WINDOW_S:.0f} s"
        if client.jobs_received == 0 and now - client.connected_at > tuning.job_timeout_s:
            return f"no valid job within {tuning.job_timeout_s:.0f} s of connecting"
        answered = client.counters.accepted + client.counters.rejected
        if answered >= tuning.reject_ratio_min_shares and client.counters.rejected / answered > tuning.max_reject_ratio:
            return (f"pool rejected {client.counters.rejected} of {answered} shares "
                    f"(over {tuning.max_reject_ratio:.0%})")
        return None

    def _bad_window_full(self, client: PoolSession, now: float) -> bool:
        """Whether ``max_bad_messages`` of this session's bad messages fell within the last window: a sliding
        window, so a pool cannot send twice the limit around the boundary of fixed windows."""
        seen_by, seen = self._bad_seen
        limit = self.tuning.max_bad_messages
        if seen_by is not client or self._bad_times.maxlen != limit:  # another session, or the limit changed
            seen = 0 if seen_by is not client else seen
            self._bad_times = deque(maxlen=limit)
        fresh = client.bad_lines - seen
        self._bad_seen = (client, client.bad_lines)
        self._bad_times.extend([now] * min(max(fresh, 0), limit))
        times = self._bad_times
        return len(times) == times.maxlen and now - times[0] < BAD_MESSAGE_WINDOW_S

    def suspect_after(self, conn: PoolConnection) -> float:
        """How long a request may stay unanswered, with nothing received, before a stall is suspected: at least
        three times the pool's slowest recent share answer and its slowest probe answer of this session (V1), or
        its slowest recent batch closed on time (V2: how long the oldest share of a partial batch waited)."""
        client = conn.client
        probe = client.probe_slowest if isinstance(client, StratumClient) else 0.0
        batch = client.ack_wait_s if isinstance(client, Sv2Client) else 0.0
        return max(self.tuning.stall_suspect_s, 3 * conn.answer_s, 3 * probe, 3 * batch)

    def _maybe_probe(self, conn: PoolConnection, client: PoolSession, now: float) -> None:
        """Nothing at stake and the pool silent: ask it something cheap, so a stall shows without a share.
        Stratum V1 only: the V2 mining protocol has no request that is always answered and free of side effects
        (UpdateChannel is answered only when invalid, RequestExtensions only right after SetupConnection, a
        channel open allocates a channel), so a V2 stall with nothing at stake waits for a share."""
        every = self.tuning.stall_probe_s
        if (not every or not self.tuning.stall_suspect_s or not isinstance(client, StratumClient)
                or client.unanswered_since is not None or now - client.last_receive < every
                or now - conn.last_probe < every):
            return
        if not any(self._ready(c, now) or (c.enabled and c.priority < conn.priority and not c.in_backoff(now))
                   for c in self.connections if c is not conn):
            return  # no standby, no better pool to try: a probe would buy nothing
        if client.probe():
            conn.last_probe = now

    def _suspected(self, conn: PoolConnection, client: PoolSession, now: float) -> bool:
        if not self.tuning.stall_suspect_s:
            return False
        since, limit = client.unanswered_since, self.suspect_after(conn)
        return since is not None and now - since > limit and now - client.last_receive > limit

    def _ready(self, conn: PoolConnection, now: float) -> bool:
        """An open, authorised session with a job that is not suspected of a stall: it can take work at once."""
        c = conn.client
        return (conn.enabled and c is not None and not c.closed.is_set() and c.authorized and c.last_job is not None
                and not self._suspected(conn, c, now))

    def _check_interval(self) -> float:
        suspect = self.tuning.stall_suspect_s
        return min(self.tuning.fallback_interval_s, 1.0, suspect / 4 if suspect else 1.0)

    async def _tend_standby(self, active: PoolConnection) -> None:
        """Keep the next usable pool connected (the hot standby); close sessions no longer needed.

        The standby is the next pool *below* the active one: better pools are the fallback probe's job (one
        connection attempt per back-off, not two).
        """
        now = time.monotonic()
        want = next((c for c in self.connections[active.priority + 1:] if c.enabled and not c.in_backoff(now)),
                    None)
        if not self.tuning.hot_standby:
            want = None
        for c in self.connections:
            client = c.client
            if c is active or client is None or client.closed.is_set():
                continue
            if now - client.last_receive > self.tuning.stall_timeout_s:  # a kept suspect confirmed dead
                client.failed_quality = True
                await client.close(f"pool sent nothing for {self.tuning.stall_timeout_s:.0f} s (stalled)")
                self._judge_session(c, client)
                log.warning("group %s: %s confirmed dead (%s)", self.name, c.url, client.close_reason)
            elif not c.enabled or (c.priority > active.priority and c is not want
                                   and not self._suspected(c, client, now)):
                await client.close("not needed as hot standby")  # (a better pool's session: the fallback's)
        if want is None or (want.client is not None and not want.client.closed.is_set()):
            return
        if self._standby_task is None or self._standby_task.done():
            self._standby_task = asyncio.create_task(self._connect_standby(want), name=f"standby {want.url}")

    async def _connect_standby(self, conn: PoolConnection) -> None:
        client = await self._connect(conn)
        if client is None:
            return
        if conn is self.active or (conn.client is not None and not conn.client.closed.is_set()):
            await client.close("not needed as hot standby")  # the pool was taken meanwhile
            return
        conn.client = client
        log.info("group %s: %s connected as hot standby", self.name, conn.url)

    def _activate(self, conn: PoolConnection, client: PoolSession) -> None:
        previous = self.active
        conn.client = client
        self.active = conn
        conn.tip = client.last_job.prev_hash if client.last_job is not None else b""
        resumed = bool(conn.last_extranonce1) and client.extranonce1 == conn.last_extranonce1
        conn.resumed_sessions += resumed
        conn.last_extranonce1 = client.extranonce1
        conn.session_id = client.session_id
        if previous is not conn:
            self.switches += 1
            log.info("group %s: mining on %s%s", self.name, conn.url,
                     f" (was {previous.url})" if previous is not None else "")
        self._on_switch(self)
        if client.last_job is not None:
            self._on_job(self, conn, client, client.last_job)
        task = asyncio.create_task(self._flush_outbox(conn, client, resumed))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _hold(self, conn: PoolConnection, client: PoolSession) -> None:
        """Stay on this pool until it dies or stalls, or a better pool comes back."""
        while not client.closed.is_set():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._check_interval())
            if client.closed.is_set():
                break
            now = time.monotonic()
            if now - client.last_receive > self.tuning.stall_timeout_s:
                client.failed_quality = True  # back it off: retrying at once would hang in its handshake
                await client.close(f"pool sent nothing for {self.tuning.stall_timeout_s:.0f} s (stalled)")
                break
            problem = self.quality_problem(client)
            if problem is not None:
                client.failed_quality = True
                await client.close(problem)
                break
            if not conn.enabled:
                await client.close("pool disabled by the operator")
                break
            if self._suspected(conn, client, now):
                standby = next((c for c in self.connections if c is not conn and self._ready(c, now)), None)
                if standby is not None and standby.client is not None:
                    self.stall_suspicions += 1
                    conn.stall_suspicions += 1
                    log.warning("group %s: %s left a request (share or liveness probe) unanswered and sent "
                                "nothing for %.1f s (stall suspected); mining on the hot standby %s, keeping the "
                                "session for its answers", self.name, conn.url, now - client.last_receive,
                                standby.url)
                    self._activate(standby, standby.client)
                    conn, client = standby, standby.client
                    continue
            self._maybe_probe(conn, client, now)
            # Suspected with no standby ready (the last pool of the group is in use): try the better ones now.
            suspected = self._suspected(conn, client, now)
            if conn.priority > 0 and (suspected or self._fallback_due()):
                better, better_client = await self._connect_best(conn.priority)
                if better is not None and better_client is not None:
                    if suspected:
                        self.stall_suspicions += 1
                        conn.stall_suspicions += 1
                        log.warning("group %s: %s stall suspected (nothing received for %.1f s); mining on the "
                                    "better pool %s again", self.name, conn.url, time.monotonic() -
                                    client.last_receive, better.url)
                    else:
                        log.info("group %s: %s is back, falling back to it", self.name, better.url)
                    if not self.tuning.hot_standby and not suspected:
                        await client.close(f"falling back to higher-priority pool {better.url}")
                    self._activate(better, better_client)
                    conn, client = better, better_client
            await self._tend_standby(conn)
        conn.last_error = client.close_reason
        self._judge_session(conn, client)
        log.warning("group %s: lost %s (%s); failing over", self.name, conn.url, client.close_reason)
        if self.active is conn:
            self.active = None
            self._on_switch(self)

    def _judge_session(self, conn: PoolConnection, client: PoolSession) -> None:
        """After a session ends: a bad or short-lived one backs the pool off; a healthy one clears that."""
        lasted = time.monotonic() - client.connected_at
        if client.failed_quality:
            conn.quality_failures += 1
            self._back_off(conn, f"quality failure ({client.close_reason})", self.tuning.max_backoff_s)
        elif client.reconnect_target is not None or (client.jobs_received and lasted >= HEALTHY_AFTER_S):
            conn.backoff_s = conn.bad_until = 0.0
        else:  # dropped early but not for bad data (a reconnect storm, a restart): retry within the interval
            self._back_off(conn, f"session ended after {lasted:.1f} s ({client.close_reason})",
                           self.tuning.fallback_interval_s)

    _last_probe: float = 0.0

    # -- operator changes (cgminer addpool / removepool / enablepool / ... and REST) ------------------

    def _reprioritise(self) -> None:
        for i, conn in enumerate(self.connections):
            conn.priority = i
        self._last_probe = 0.0  # re-evaluate the best pool at the next check
        self._wake.set()

    def add(self, endpoint: PoolEndpoint) -> PoolConnection:
        if len(self.connections) >= MAX_POOLS_PER_GROUP:
            raise ConfigError(f"a pool group holds at most {MAX_POOLS_PER_GROUP} pools")
        conn = PoolConnection(endpoint, len(self.connections))
        self.connections.append(conn)
        self._reprioritise()
        return conn

    async def remove(self, conn: PoolConnection) -> None:
        if len(self.connections) == 1:
            raise ValueError("cannot remove the last pool of a group")
        self.connections.remove(conn)
        if conn.client is not None:
            await conn.client.close("pool removed by the operator")
        self._reprioritise()

    def set_enabled(self, conn: PoolConnection, enabled: bool) -> None:
        if not enabled and sum(c.enabled for c in self.connections) == 1 and conn.enabled:
            raise ValueError("cannot disable the last enabled pool of a group")
        conn.enabled = enabled
        self._reprioritise()

    def move_to(self, conn: PoolConnection, position: int) -> None:
        self.connections.remove(conn)
        self.connections.insert(max(0, min(position, len(self.connections))), conn)
        self._reprioritise()

    def _fallback_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_probe >= self.tuning.fallback_interval_s:
            self._last_probe = now
            return True
        return False

    # -- shares -------------------------------------------------------------------------------------

    async def submit(self, conn: PoolConnection, extranonce1: bytes, share: Share, prev_hash: bytes,
                     on_fate: FateListener | None = None) -> SubmitResult | None:
        """Submit to the pool the share was mined for; queue it if that session is not connected now.

        The superseded-block check runs in the same step as the write, so once the pool's new tip has
        been read no share for the old one can leave. ``on_fate`` hears what became of the share, also
        later (a queued share re-sent when its session is back).
        """
        client = conn.client
        if client is None or client.closed.is_set() or client.extranonce1 != extranonce1:
            conn.queue(PendingShare(share, extranonce1, time.time(), prev_hash, on_fate=on_fate))
            return None
        if prev_hash != conn.tip:
            conn.stale_dropped += 1
            if on_fate is not None:
                on_fate(SUPERSEDED, None)
            return None
        if not self.submit_limit.take(time.monotonic()):
            conn.throttled += 1
            if on_fate is not None:
                on_fate(THROTTLED, None)
            self._log.log(logging.WARNING, "throttled", "%s: share rate over %.0f/s; share dropped",
                          conn.url, self.submit_limit.rate)
            return None
        sent = time.monotonic()
        try:
            result = await client.submit(share)
        except ConnectionError:  # written (or about to be) but unanswered: re-sent if the session resumes
            conn.queue(PendingShare(share, extranonce1, time.time(), prev_hash, True, on_fate))
            return None
        conn.answer_s = max(time.monotonic() - sent, 0.9 * conn.answer_s)
        conn.counters.record(result, share)
        self._log_result(conn, share, result)
        if on_fate is not None:
            on_fate(ANSWERED, result)
        return result

    def _log_result(self, conn: PoolConnection, share: Share, result: SubmitResult) -> None:
        c = conn.counters
        if result.accepted:
            self._log.log(logging.INFO, "accepted", "%s: share accepted (difficulty %.4g of %.4g; %d accepted, "
                          "%d rejected)", conn.url, share.difficulty, share.pool_difficulty, c.accepted,
                          c.rejected + c.stale)
        else:
            self._log.log(logging.INFO, "rejected", "%s: share %s: %s (%d accepted, %d rejected)", conn.url,
                          "stale" if result.stale else "rejected", result.reason, c.accepted, c.rejected + c.stale)

    async def _flush_outbox(self, conn: PoolConnection, client: PoolSession, resumed: bool) -> None:
        """Re-send the shares kept for this session once the pool's current tip is known."""
        if not conn.outbox:
            return
        deadline = time.monotonic() + self.tuning.response_timeout_s
        while client.last_job is None and not client.closed.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the first job follows the handshake: its prev hash says what is stale
        if client.last_job is None or client.closed.is_set():
            return  # kept for the next session of this pool
        pending = list(conn.outbox)
        conn.outbox.clear()
        sent = stale = 0
        lost_session = [item for item in pending if item.extranonce1 != client.extranonce1]
        for item in pending:
            if item.extranonce1 != client.extranonce1:
                item.fate(UNRECOVERABLE)
                continue
            if item.prev_hash != conn.tip:
                stale += 1
                item.fate(SUPERSEDED)
                continue
            try:
                result = await client.submit(item.share)
            except ConnectionError:
                conn.queue(item)
                continue
            sent += 1
            conn.resubmitted += 1
            if item.written and result.duplicate:
                conn.resent_duplicates += 1  # it had reached the pool; only the answer was lost
                item.fate(RESENT_DUPLICATE, result)
            else:
                conn.counters.record(result, item.share)
                self._log_result(conn, item.share, result)
                item.fate(ANSWERED, result)
        conn.unrecoverable += len(lost_session)
        conn.stale_dropped += stale
        if lost_session:
            log.warning("%s: %d share(s) found for extranonce1 %s are unrecoverable: the pool did not resume that "
                        "session (it gave %s), so they are no longer valid there", conn.url, len(lost_session),
                        lost_session[0].extranonce1.hex(), client.extranonce1.hex())
        log.info("%s: session %s; re-sent %d queued share(s), %d for a superseded block dropped", conn.url,
                 "resumed" if resumed else "new", sent, stale)


class PoolManager:
    """All pool groups. Picks which group the next piece of work is for, by quota."""

    def __init__(self, groups: list[PoolGroupConfig], tuning: StratumTuning, agent_name: str,
                 on_job: JobListener, on_switch: Callable[[PoolGroup], None],
                 policy: SessionPolicy | None = None) -> None:
        self.groups = [PoolGroup(g, tuning, agent_name, on_job, on_switch, policy) for g in groups]
        self._eligible: set[str] = set()  # groups that could take work at the last pick

    def start(self) -> None:
        for group in self.groups:
            group.start()

    def set_policy(self, policy: SessionPolicy) -> None:
        """A new hardware-derived policy: for the next sessions, and the difficulty range of the live ones."""
        for group in self.groups:
            group.policy = policy
        for conn in self.connections():
            client = conn.client
            if isinstance(client, StratumClient):
                client.options = dataclasses.replace(client.options, difficulty_range=policy.difficulty_range)

    async def stop(self) -> None:
        for group in self.groups:
            await group.stop()

    def pick_group(self, eligible: Callable[[PoolGroup], bool]) -> PoolGroup | None:
        """Deficit round robin: the eligible group furthest behind its quota gets the next work item."""
        candidates = [g for g in self.groups if eligible(g)]
        if not candidates:
            return None
        # A group that could not take work (no job yet, pool down) earns no credit meanwhile: it rejoins at
        # the level of the groups that kept mining instead of starving them while it catches up.
        kept = [g.quota_level for g in candidates if g.name in self._eligible]
        for g in candidates:
            if g.name not in self._eligible and kept:
                g.quota_level = max(g.quota_level, min(kept))
        self._eligible = {g.name for g in candidates}
        group = min(candidates, key=lambda g: (g.quota_level, self.groups.index(g)))
        group.work_issued += 1
        group.quota_level += 1.0 / group.quota
        return group

    def connections(self) -> list[PoolConnection]:
        return [c for g in self.groups for c in g.connections]

    def locate(self, index: int) -> tuple[PoolGroup, PoolConnection]:
        """The group and pool at a flat index (cgminer numbers pools across all groups)."""
        for group in self.groups:
            for conn in group.connections:
                if index == 0:
                    return group, conn
                index -= 1
        raise IndexError("no such pool")
