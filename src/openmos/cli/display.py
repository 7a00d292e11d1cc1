"""Live terminal status for the agent and the local pool (rich)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from openmos.miner.agent import MiningAgent
    from openmos.pool.server import LocalPool

MAX_ROWS = 20  # miners listed in a live table; the rest are summed in one line


def literal(value: str) -> Text:
    """A table cell for text from the network (worker names): shown as is, never read as rich markup (a worker
    named ``[/]`` stopped the pool's live panel with a MarkupError)."""
    return Text(value)


def more_rows(table: Table, hidden: int, what: str) -> None:
    if hidden > 0:
        table.add_row(Text(f"... {hidden:,} more {what}", style="dim"))


def stop_event(duration: float = 0) -> asyncio.Event:
    """An event set by Ctrl-C / SIGTERM, or after ``duration`` seconds (0: no time limit)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    return stop


async def serve(duration: float, live: Callable[[], Group] | None, show: bool) -> None:
    """Wait for Ctrl-C / SIGTERM or the duration, refreshing the live panel."""
    stop = stop_event(duration)
    if live is not None and show:
        with Live(live(), refresh_per_second=2, console=Console(stderr=True)) as panel:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                panel.update(live())
    else:
        await stop.wait()


def si(value: float, unit: str = "H/s") -> str:
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def agent_panel(agent: MiningAgent) -> Panel:
    stats = agent.stats
    tel = agent.telemetry()
    rates = Table.grid(padding=(0, 2))
    rates.add_row("hashrate 5s", si(agent.hashrate.rate(5)), "1m", si(agent.hashrate.rate(60)),
                  "15m", si(agent.hashrate.rate(900)))
    rates.add_row("valid nonces", str(stats.valid_nonces), "HW errors", str(stats.hardware_errors),
                  "block candidates", str(stats.block_candidates))
    if tel.input_power_w is not None:
        ths = agent.hashrate.rate(60) / 1e12
        temps = [t for b in tel.boards for t in (b.chip_temperatures_c or b.temperatures_c)]
        rates.add_row("power", f"{tel.input_power_w:,.0f} W", "J/TH", f"{tel.input_power_w / ths:.2f}" if ths else "-",
                      "hottest sensor", f"{max(temps):.1f} C" if temps else "-")
        if tel.fans:
            rates.add_row("fans", " ".join(f"{f.rpm}" for f in tel.fans) + " rpm", "duty",
                          f"{tel.fans[0].duty_pct:.0f} %", "", "")
    if agent.tuner is not None:
        st = agent.tuner.status
        rates.add_row("tuner", f"{st.state.value} {st.percent:.0f} %", "target", st.effective_target,
                      "phase", st.phase)
    pools = Table(title="pools", expand=True)
    for col in ("group", "url", "status", "diff", "accepted", "rejected", "stale", "queued/lost"):
        pools.add_column(col)
    for group in agent.pools.groups:
        for conn in group.connections:
            c = conn.counters
            active = group.active is conn
            diff = f"{conn.client.difficulty:.4g}" if conn.client is not None else "-"
            pools.add_row(group.name, str(conn.url), ("[green]active" if active else conn.status), diff,
                          str(c.accepted), str(c.rejected), str(c.stale), f"{len(conn.outbox)}/{conn.lost_shares}")
    uptime = int(time.time() - stats.started_at)
    source = "figures modelled" if tel.modelled else "hashrate measured (hash counters)"
    return Panel(Group(rates, pools), title=f"OpenMOS agent · {tel.model} · up {uptime}s · {source}")


def pool_panel(pool: LocalPool) -> Panel:
    table = Table(expand=True)
    for col in ("worker", "accepted", "rejected", "stale", "dup", "pool-verified rate", "best diff", "blocks"):
        table.add_column(col)
    busiest = sorted(pool.workers.items(), key=lambda item: item[1].accepted, reverse=True)
    for name, w in busiest[:MAX_ROWS]:
        table.add_row(literal(name), str(w.accepted), str(w.rejected), str(w.stale), str(w.duplicate),
                      si(w.hashrate()), f"{w.best_difficulty:.4g}", str(w.blocks))
    more_rows(table, len(busiest) - MAX_ROWS, "workers")
    title = (f"local pool {pool.url} · height {pool.chain.height} · network diff {pool.chain.network_difficulty:g}"
             f" · blocks found {len(pool.blocks_found)}")
    return Panel(table, title=title)
