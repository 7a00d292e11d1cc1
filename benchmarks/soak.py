"""Soak: one simulated S21 for hours of simulated time against two quirky pools and a hostile network.

The agent mines a simulated S21 (hashrate, power and temperatures are *modelled*; shares are real SHA-256d
found by the simulator's CPU hashing) against a primary and a backup local pool, each behind a fault proxy.
The pools announce new blocks with ``clean_jobs=false`` (legal, and the trap of issue 11). Every simulated
minute the proxies push a new difficulty (and now and then a hostile one: 1e400, NaN, 0, 1e-300); every
simulated hour the primary pool is killed and restarted, the network stalls, and a reconnect storm drops
every connection several times in a row. Timeouts, back-offs and the pools run in real time; the
simulated clock runs ``--speed`` times faster.

Figures: shares found / accepted / rejected / never sent (superseded block) / lost (zero expected) /
unrecoverable because a pool lost the session (counted apart) / re-sent after a drop, duplicates (zero
expected), old-block shares the pools accepted (zero expected), failover times after a pool kill and after a
network stall (< 2 s expected: the agent keeps a hot standby connected and moves the work to it once a share,
or with no share at stake a liveness probe sent after ``stall_probe_s`` of silence, stays unanswered with
nothing received for ``stall_suspect_s``; measured from the kill or the stall's start
to the backup's job in the hash loop and to the first share sent through the backup's proxy), fallback
time after the primary returns, RSS at
the start and end (flat within 10 % expected). Baseline, measured in the same run: the same agent and
pools with no faults for the first part of the run; credited difficulty per hash really computed (so the
machine's varying CPU speed cancels out) is printed for both, and the soak's as a ratio of the baseline's,
with the breakdown of every found share's difficulty by what became of it (credited, superseded block,
stale, unrecoverable, still queued...), so the ratio is explained.

Usage: python benchmarks/soak.py [--quick] [--hours 6] [--speed 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from openmos.hw.sim.backend import SimHardware
from openmos.hw.sim.clock import SimClock
from openmos.miner import AgentConfig, MiningAgent
from openmos.miner.agent import FoundShare
from openmos.pool import LocalPool, PoolSettings
from openmos.stratum.difficulty import difficulty_for_interval
from openmos.stratum.protocol import encode_notification

STALL_TIMEOUT_S = 4.0  # real seconds (the agent's stall_timeout_s in this run: confirms a stalled pool dead)
STALL_SUSPECT_S = 1.0  # real seconds (stall_suspect_s: a request unanswered and nothing received -> hot standby)
STALL_PROBE_S = 0.5  # real seconds (stall_probe_s: the pool silent this long, nothing at stake -> liveness probe)
HOSTILE = ["1e400", "NaN", "0", "1e-300"]


@dataclass(frozen=True)
class Schedule:
    """Which simulated minute of each period brings which fault (-1: never)."""

    period: int = 60
    kill: int = 10  # the primary pool dies ...
    restart: int = 20  # ... and comes back
    storm: int = 30  # every connection dropped five times in a row
    stall: int = 40  # the network to the pool in use stalls
    hostile: int = 50  # the difficulty change is a hostile value


NO_FAULTS = Schedule(kill=-1, restart=-1, storm=-1, stall=-1, hostile=-1)


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 1e6


@dataclass
class Window:
    """One measured stretch of the run: wall-clock bounds, real hashes and superseded difficulty at each end."""

    began: float
    hashes0: float
    superseded0: float
    ended: float = 0.0
    hashes1: float = 0.0
    superseded1: float = 0.0

    def close(self, agent: MiningAgent, hardware: SimHardware) -> None:
        self.ended, self.hashes1, self.superseded1 = time.time(), real_hashes(hardware), \
            agent.stats.superseded_difficulty

    def breakdown(self, found: list[FoundShare]) -> dict[str, float]:
        """Pool difficulty x 2^32 per real hash, by what became of the shares found in this window."""
        per_hash = 2**32 / max(self.hashes1 - self.hashes0, 1.0)
        out: dict[str, float] = {"superseded block: found after the new tip arrived (dropped)":
                                 (self.superseded1 - self.superseded0) * per_hash}
        for f in found:
            if not self.began <= f.found_at < self.ended:
                continue
            key = share_fate(f)
            out[key] = out.get(key, 0.0) + f.share.pool_difficulty * per_hash
        return out

    def shares(self, found: list[FoundShare]) -> int:
        return sum(1 for f in found if self.began <= f.found_at < self.ended)


def share_fate(f: FoundShare) -> str:
    if f.result is not None and f.result.accepted:
        return "credited"
    if f.result is not None and f.fate == "resent duplicate":
        return "re-sent after a drop, the pool already had it"
    if f.result is not None:
        return "stale answer" if f.result.stale else f"rejected ({f.result.reason[:40]})"
    return {"queued": "still queued for its session at the end",
            "superseded": "superseded block: the tip moved before it could be sent",
            "found": "unanswered at the end"}.get(f.fate, f.fate)


class QuirkyPool(LocalPool):
    """A local pool that announces new blocks as non-clean jobs and counts old-block shares it accepts."""

    stale_block_accepted = 0

    def _new_tip(self) -> None:
        self._new_job(clean=False)  # clean is only a hint: the prev-hash change is what matters
        self._broadcast_job()

    def _on_submit(self, session: Any, params: list[Any], received: float = 0.0) -> bool:
        job = self._jobs.get(params[1]) if len(params) > 1 and isinstance(params[1], str) else None
        ok = super()._on_submit(session, params, received)
        if ok and job is not None and job.template.prev_hash != self._current_job().template.prev_hash:
            self.stale_block_accepted += 1
        return ok


@dataclass
class _Stream:
    """What the proxy knows about one agent connection: job -> prev-hash, and which tip the agent has seen."""

    job_prev: dict[str, str] = field(default_factory=dict)
    tip: str = ""  # newest prev-hash the pool sent
    known: str = ""  # newest prev-hash the agent has provably read (it answered a ping sent after it)
    pings: dict[str, str] = field(default_factory=dict)


@dataclass
class FaultProxy:
    """TCP proxy in front of a pool: forwards lines, can stall, drop every connection, or inject lines.

    It also measures stale-block submits without trusting the agent: after every notify with a new
    prev-hash it sends a ``mining.ping`` (and swallows the answer). The agent reads its socket in order, so
    a submit that arrives after that answer for a job of an older block was sent knowingly (a bug); one
    that arrives before was merely in flight when the block changed.
    """

    upstream_port: int
    port: int = 0
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # set: nothing moves in either direction
    stale_known: int = 0
    stale_in_flight: int = 0
    submits: int = 0  # mining.submit lines forwarded to the pool
    submits_read: int = 0  # mining.submit lines read from the agent (also while stalled)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _downstream: list[asyncio.StreamWriter] = field(default_factory=list)
    _pings: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"stratum+tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()

    def drop_all(self) -> None:
        for w in self._writers:
            w.close()
        self._writers.clear()
        self._downstream.clear()

    def inject(self, line: bytes) -> None:
        if not self.stalled.is_set():
            for w in self._downstream:
                w.write(line)

    def _down(self, stream: _Stream, line: bytes, writer: asyncio.StreamWriter) -> None:
        """Pool -> agent: forward, and after a new tip ask the agent for a ping answer."""
        writer.write(line)
        msg = _json(line)
        if msg.get("method") != "mining.notify" or not isinstance(msg.get("params"), list) or len(msg["params"]) < 2:
            return
        job, prev = str(msg["params"][0]), str(msg["params"][1])
        stream.job_prev[job] = prev
        if prev != stream.tip:
            stream.tip = prev
            ping = f"soak-{next(self._pings)}"
            stream.pings[ping] = prev
            writer.write(json.dumps({"id": ping, "method": "mining.ping", "params": []}).encode() + b"\n")

    def _up(self, stream: _Stream, line: bytes) -> bool:
        """Agent -> pool: False for the proxy's own ping answers (not forwarded); count stale submits."""
        msg = _json(line)
        if msg.get("id") in stream.pings and "method" not in msg:
            stream.known = stream.pings.pop(msg["id"])
            return False
        if msg.get("method") == "mining.submit" and isinstance(msg.get("params"), list) and len(msg["params"]) > 1:
            self.submits += 1
            prev = stream.job_prev.get(str(msg["params"][1]))
            if prev is not None and prev != stream.tip:
                if prev != stream.known and stream.known:
                    self.stale_known += 1
                else:
                    self.stale_in_flight += 1
        return True

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: _Stream,
                    downstream: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            while True:
                line = await reader.readline()
                if not line:
                    break
                if not downstream and b'"mining.submit"' in line:
                    self.submits_read += 1
                while self.stalled.is_set():
                    await asyncio.sleep(0.05)
                if downstream:
                    self._down(stream, line, writer)
                elif self._up(stream, line):
                    writer.write(line)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port, limit=1 << 20)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        self._downstream.append(writer)
        stream = _Stream()
        await asyncio.gather(self._pipe(reader, up_writer, stream, False), self._pipe(up_reader, writer, stream, True))


def _json(line: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(line)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


@dataclass
class Figures:
    failovers: list[float] = field(default_factory=list)  # pool kill -> work from the backup (s)
    stall_failovers: list[float] = field(default_factory=list)  # stall start -> work from the backup (s)
    stall_first_shares: list[float] = field(default_factory=list)  # stall start -> first share sent to the backup
    kill_first_shares: list[float] = field(default_factory=list)  # pool kill -> first share sent to the backup
    stall_at_stake: list[float] = field(default_factory=list)  # stall start -> first share sent into the stall
    stalls_skipped: int = 0  # no pool in use within 30 s of the scheduled stall
    fallbacks: list[float] = field(default_factory=list)  # primary restarted -> work from it again (s)
    storms: int = 0
    difficulty_changes: int = 0
    hostile_sent: int = 0
    sessions: list[Any] = field(default_factory=list)  # every pool session seen (for refusal counts)
    measuring: set[asyncio.Task[None]] = field(default_factory=set)  # background measurements still running
    agent_seconds: float = 0.0  # real seconds the agent ran

    def measure(self, into: list[float], began: float, condition: Callable[[], bool], missing: bool = True) -> None:
        """Time from ``began`` until ``condition`` in the background, so the run's events are not held up."""
        async def run() -> None:
            took = await wait_until(condition, 30)
            if took is not None or missing:
                into.append(time.monotonic() - began if took is not None else float("inf"))
        task = asyncio.create_task(run())
        self.measuring.add(task)
        task.add_done_callback(self.measuring.discard)


async def wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``condition`` held (polled every 10 ms), or None after ``timeout``."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            return None
        await asyncio.sleep(0.01)
    return time.monotonic() - began


def mining_on(agent: MiningAgent, proxy: FaultProxy) -> bool:
    """The agent has a live job from the pool behind this proxy (it is hashing for it)."""
    ctx = agent._jobs.get("soak")
    return ctx is not None and ctx.conn.url.port == proxy.port and not ctx.client.closed.is_set()


def credited(agent: MiningAgent) -> float:
    return sum(c.counters.accepted_difficulty for c in agent.pools.connections())


def real_hashes(hardware: SimHardware) -> float:
    """Hashes the simulator's CPU really computed (its telemetry shows the modelled S21 instead)."""
    return hardware._cpu.telemetry().hashes


@dataclass
class Outcome:
    """The soak's figures a test can check (the printout has them all)."""

    accepted: int
    lost: int
    unrecoverable: int
    duplicate_rejects: int
    stale_known: int
    stale_block_accepted: int
    figures: Figures
    rss_growth_pct: float


async def soak(hours: float, speed: float, baseline_share: float, seed: int, schedule: Schedule = Schedule(),
               fallback_interval_s: float = 5.0, min_baseline_s: float = 20.0) -> Outcome:
    """Run the soak and print its figures; ``schedule`` and the shorter settings let a test run a short one."""
    rng = random.Random(seed)
    clock = SimClock(speed)
    hardware = SimHardware("s21", clock=clock, seed=seed)
    rate = hardware.expected_hashrate()
    difficulty = float(f"{difficulty_for_interval(rate, 0.5):.3g}")  # ~2 shares/s from the real hashing
    settings = {"port": 0, "start_difficulty": difficulty, "vardiff": None, "network_difficulty": difficulty * 10,
                "job_interval": STALL_TIMEOUT_S / 2}  # a job refresh well within the stall timeout, as real pools
    primary, backup = QuirkyPool(PoolSettings(**settings)), QuirkyPool(PoolSettings(**settings))  # type: ignore[arg-type]
    await primary.start()
    await backup.start()
    p_proxy, b_proxy = FaultProxy(primary.port), FaultProxy(backup.port)
    await p_proxy.start()
    await b_proxy.start()
    config = AgentConfig.from_dict({
        "hardware": "sim:s21",
        "stratum": {"stall_timeout_s": STALL_TIMEOUT_S, "stall_suspect_s": STALL_SUSPECT_S,
                    "stall_probe_s": STALL_PROBE_S,
                    "fallback_interval_s": fallback_interval_s, "retry_delay_s": 0.5,
                    "response_timeout_s": 3.0, "suggest_difficulty": difficulty, "max_share_rate": 10.0},
        "groups": [{"name": "soak", "pools": [{"url": p_proxy.url, "user": "soak.s21"},
                                               {"url": b_proxy.url, "user": "soak.s21"}]}],
        "api": {"enabled": False},
    })
    agent = MiningAgent(config, hardware)
    figures = Figures()
    sim_total = hours * 3600.0
    real_total = sim_total / speed
    baseline_real = max(min_baseline_s, baseline_share * real_total)
    print(f"soak: simulated S21 (modelled), {hours:g} simulated h at {speed:g}x = {real_total:.0f} s real, "
          f"after a {baseline_real:.0f} s fault-free baseline; real hashing {rate / 1e3:.0f} kH/s, "
          f"pool difficulty {difficulty:g}")
    await agent.start()
    agent_started = time.monotonic()
    try:
        ok = await wait_until(lambda: mining_on(agent, p_proxy), 60)
        if ok is None:
            raise SystemExit("the agent never started mining on the primary pool")
        # Baseline: no faults, timed from the first accepted share (hashing workers warmed up).
        await wait_until(lambda: credited(agent) > 0, 120)
        c0, h0 = credited(agent), real_hashes(hardware)
        base = Window(time.time(), h0, agent.stats.superseded_difficulty)
        await asyncio.sleep(baseline_real)
        base.close(agent, hardware)
        baseline_rate = (credited(agent) - c0) * 2**32 / max(real_hashes(hardware) - h0, 1.0)
        rss_start = rss_mb()
        c1, h1 = credited(agent), real_hashes(hardware)
        run = Window(time.time(), h1, agent.stats.superseded_difficulty)
        sim_start = clock.now()
        with Progress(transient=True) as progress:
            task = progress.add_task("soak (simulated time)", total=sim_total)
            minute, last = 0, int(sim_total // 60)
            while (elapsed := clock.now() - sim_start) < sim_total or minute < last:
                progress.update(task, completed=min(elapsed, sim_total))
                while minute < min(int(elapsed // 60), last):  # every simulated minute gets its event, late or not
                    minute += 1
                    await minute_event(minute, schedule, rng, difficulty, primary, p_proxy, b_proxy, agent,
                                       figures)
                await asyncio.sleep(0.05)
        run.close(agent, hardware)
        await asyncio.sleep(2)  # answers in flight
        for task in list(figures.measuring):  # a measurement still waiting at the end is reported as missing
            task.cancel()
        soak_rate = (credited(agent) - c1) * 2**32 / max(run.hashes1 - h1, 1.0)
        rss_end = rss_mb()
    finally:
        figures.agent_seconds = time.monotonic() - agent_started
        await agent.stop()
        for closer in (p_proxy.stop, b_proxy.stop, primary.stop, backup.stop):
            with contextlib.suppress(Exception):
                await closer()
    outcome = report(agent, figures, primary, backup, [p_proxy, b_proxy], baseline_rate, soak_rate, rss_start,
                     rss_end, fallback_interval_s)
    explain(list(agent.found), base, run)
    return outcome


async def minute_event(minute: int, schedule: Schedule, rng: random.Random, difficulty: float,
                       primary: QuirkyPool, p_proxy: FaultProxy, b_proxy: FaultProxy, agent: MiningAgent,
                       figures: Figures) -> None:
    """What happens at each simulated minute (the schedule's period repeats)."""
    m, sc = minute % schedule.period, schedule
    new = difficulty * rng.uniform(1.0, 3.0)  # never easier than the pool's own: every share stays valid
    raw = f"{new:.6g}"
    if m == sc.hostile:
        raw = rng.choice(HOSTILE)
        figures.hostile_sent += 1
    line = encode_notification("mining.set_difficulty", [0]).replace(b"[0]", f"[{raw}]".encode())
    p_proxy.inject(line)
    b_proxy.inject(line)
    figures.difficulty_changes += 1
    for conn in agent.pools.connections():
        if conn.client is not None and all(conn.client is not c for c in figures.sessions):
            figures.sessions.append(conn.client)
    if m == sc.kill and mining_on(agent, p_proxy):  # the primary pool dies, comes back at the restart minute
        began, sent = time.monotonic(), b_proxy.submits
        await primary.stop()
        took = await wait_until(lambda: mining_on(agent, b_proxy), 30)
        figures.failovers.append(time.monotonic() - began if took is not None else float("inf"))
        figures.measure(figures.kill_first_shares, began, lambda: b_proxy.submits > sent)
    elif m == sc.kill:
        await primary.stop()
    elif m == sc.restart:
        await primary.start()
        took = await wait_until(lambda: mining_on(agent, p_proxy), 60)
        figures.fallbacks.append(took if took is not None else float("inf"))
    elif m == sc.storm:  # reconnect storm: every connection dropped five times in a row
        for _ in range(5):
            p_proxy.drop_all()
            b_proxy.drop_all()
            await asyncio.sleep(0.3)
        figures.storms += 1
    elif m == sc.stall:  # the network to the pool in use stalls (connection open, nothing moves)
        if await wait_until(lambda: mining_on(agent, p_proxy) or mining_on(agent, b_proxy), 30) is None:
            figures.stalls_skipped += 1  # no pool in use: no stall this hour
            return
        used, other = (p_proxy, b_proxy) if mining_on(agent, p_proxy) else (b_proxy, p_proxy)
        began, sent, read = time.monotonic(), other.submits, used.submits_read
        used.stalled.set()
        figures.measure(figures.stall_at_stake, began, lambda: used.submits_read > read, missing=False)
        figures.measure(figures.stall_first_shares, began, lambda: other.submits > sent)
        took = await wait_until(lambda: mining_on(agent, other), 30)
        figures.stall_failovers.append(took if took is not None else float("inf"))
        await asyncio.sleep(1.0)
        used.stalled.clear()
        used.drop_all()


def report(agent: MiningAgent, f: Figures, primary: QuirkyPool, backup: QuirkyPool, proxies: list[FaultProxy],
           baseline_rate: float, soak_rate: float, rss_start: float, rss_end: float,
           fallback_interval_s: float) -> Outcome:
    conns = agent.pools.connections()
    answered = [s.result for s in agent.found if s.result is not None]
    accepted = sum(r.accepted for r in answered)
    stale = sum(r.stale for r in answered)
    rejected = len(answered) - accepted - stale
    superseded = agent.stats.superseded_nonces + sum(c.stale_dropped for c in conns)
    lost = sum(c.lost_shares for c in conns) + agent.stats.dropped_shares
    unrecoverable = sum(c.unrecoverable for c in conns)
    queued = sum(len(c.outbox) for c in conns)
    throttled = sum(c.throttled for c in conns)
    refused = sum(getattr(c, "difficulty_rejections", 0) for c in f.sessions)

    def stat(values: list[float]) -> str:
        if not values:
            return "n/a"
        return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s over {len(values)}"

    reasons: dict[str, int] = {}
    for c in conns:
        for reason, n in c.counters.reject_reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    print(f"shares found {agent.stats.shares_found}, answered {len(answered)}: accepted {accepted}, rejected "
          f"{rejected}, stale {stale} {reasons or ''}; never sent because their block was superseded "
          f"{superseded}; lost {lost} (target 0); unrecoverable because the pool lost the session {unrecoverable}; "
          f"throttled {throttled}; still queued for their session at the end {queued}")
    print(f"drops: sessions resumed {sum(c.resumed_sessions for c in conns)}, shares re-sent "
          f"{sum(c.resubmitted for c in conns)}, of which the pool already had "
          f"{sum(c.resent_duplicates for c in conns)} (acknowledged again by mos pool without a second credit: "
          f"{primary.replayed_shares + backup.replayed_shares}); duplicate rejects at the pools "
          f"{sum(p.rejections.get('duplicate share', 0) for p in (primary, backup))} (target 0)")
    print(f"blocks found {len(primary.blocks_found) + len(backup.blocks_found)}, all announced clean_jobs=false: "
          f"old-block shares sent after the agent had read the new tip {sum(p.stale_known for p in proxies)} "
          f"(target 0); in flight when the tip changed {sum(p.stale_in_flight for p in proxies)}; old-block "
          f"shares the pools accepted {primary.stale_block_accepted + backup.stale_block_accepted} (the pool's view "
          "also counts shares already on the wire when it announced the tip)")
    print(f"failover after a pool kill: backup's job in the hash loop {stat(f.failovers)}; first share sent to "
          f"the backup {stat(f.kill_first_shares)} (target < 2 s)")
    print(f"failover after a network stall: backup's job in the hash loop {stat(f.stall_failovers)}; first share "
          f"sent to the backup {stat(f.stall_first_shares)} (target < 2 s; stall suspected once a share or a "
          f"liveness probe (sent after {STALL_PROBE_S:g} s of silence) has been unanswered {STALL_SUSPECT_S:g} s, "
          f"confirmed at {STALL_TIMEOUT_S:g} s); stall start -> first share sent into the stall (share luck) "
          f"{stat(f.stall_at_stake)}; stalls skipped (no pool in use) {f.stalls_skipped}")
    probes, answers = (sum(n) for n in zip(*(c.probe_counts() for c in conns), strict=True))
    print(f"liveness probes sent {probes} (answered {answers}; the first of each session is the handshake's "
          f"mining.extranonce.subscribe), {probes / max(f.agent_seconds, 1e-9):.2f}/s; stall suspicions per pool "
          f"{[c.stall_suspicions for c in conns]}")
    print(f"fallback to the restarted primary: {stat(f.fallbacks)} (fallback_interval_s = {fallback_interval_s:g}); "
          f"stall suspicions {sum(g.stall_suspicions for g in agent.pools.groups)}")
    print(f"difficulty changes {f.difficulty_changes} (hostile values sent {f.hostile_sent}, refused {refused}; "
          f"work errors {agent.stats.work_errors}); reconnect storms {f.storms}; hardware errors "
          f"{agent.stats.hardware_errors} (modelled)")
    st = agent.stats
    print(f"agent: valid nonces {st.valid_nonces}, expired {st.expired_nonces}, superseded {st.superseded_nonces}, "
          f"dropped (queue) {st.dropped_shares}, work errors {st.work_errors}; pool switches "
          f"{sum(g.switches for g in agent.pools.groups)}; generation {agent.generation}")
    growth = (rss_end - rss_start) / rss_start * 100
    print(f"RSS {rss_start:.1f} MB -> {rss_end:.1f} MB ({growth:+.1f} %, target within 10 %)")
    ratio = soak_rate / baseline_rate if baseline_rate else float("nan")
    print(f"credited difficulty x 2^32 per hash really computed (1.0 = every hash paid, on average): soak "
          f"{soak_rate:.3f} vs fault-free baseline {baseline_rate:.3f} (ratio {ratio:.2f}, luck included)")
    duplicates = sum(p.rejections.get("duplicate share", 0) for p in (primary, backup))
    return Outcome(accepted, lost, unrecoverable, duplicates, sum(p.stale_known for p in proxies),
                   primary.stale_block_accepted + backup.stale_block_accepted,
                   f, growth)


def explain(found: list[FoundShare], base: Window, run: Window) -> None:
    """Where the credit per hash went: every found share's pool difficulty by its fate, per real hash."""
    b, r = base.breakdown(found), run.breakdown(found)
    print("credit breakdown, pool difficulty x 2^32 per hash really computed (found = luck, 1.0 on average):")
    print(f"  {'':58} {'baseline':>9} {'soak':>9}")
    print(f"  {'found by the hardware (all of the below)':58} {sum(b.values()):9.3f} {sum(r.values()):9.3f}")
    for key in sorted(set(b) | set(r), key=lambda k: (k != "credited", -r.get(k, 0.0))):
        print(f"  {key:58} {b.get(key, 0.0):9.3f} {r.get(key, 0.0):9.3f}")
    found_b, found_r = sum(b.values()), sum(r.values())
    n_b, n_r = base.shares(found), run.shares(found)
    if found_b and found_r and n_b and n_r:
        credited_b, credited_r = b.get("credited", 0.0) / found_b, r.get("credited", 0.0) / found_r
        print(f"  credited share of what was found: baseline {credited_b:.1%}, soak {credited_r:.1%} -> soak/baseline "
              f"without luck {credited_r / credited_b:.2f}; luck (found per hash) soak/baseline "
              f"{found_r / found_b:.2f}x, expected spread about +-{100 * (1 / n_b + 1 / n_r) ** 0.5:.0f} % "
              f"({n_b} and {n_r} shares)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one simulated hour (about 30 s real)")
    parser.add_argument("--hours", type=float, default=6.0, help="simulated hours (default: %(default)s)")
    parser.add_argument("--speed", type=float, default=120.0, help="simulated seconds per real second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true", help="no kills, storms or stalls (diagnostic)")
    parser.add_argument("--baseline", type=float, default=0.25,
                        help="fault-free baseline length as a fraction of the soak's real time (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    hours = 1.0 if args.quick else args.hours
    asyncio.run(soak(hours, args.speed, args.baseline, args.seed, NO_FAULTS if args.no_faults else Schedule()))


if __name__ == "__main__":
    main()
