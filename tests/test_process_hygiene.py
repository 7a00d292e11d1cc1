"""``mos run`` as an operator runs it, against a flooding pool: SIGTERM honoured, no orphaned hash workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from hostile_pool import HostilePool


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.1)


async def start_agent(pool: HostilePool) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openmos.cli.main", "run", "--no-status", "--no-api", "--hardware", "cpu:2",
        "--pool", pool.url, "--user", "me.rig", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_sigterm_under_flood_exits_cleanly_and_leaves_no_workers() -> None:
    pool = HostilePool(difficulty="0.0005")
    pool.flood = True
    await pool.start()
    proc = await start_agent(pool)
    try:
        await wait_until(lambda: len(descendants(proc.pid)) >= 3, 60, "hash workers (forkserver + 2)")
        await pool.session()
        await asyncio.sleep(3)  # let the flood run
        workers = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await pool.stop()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    log = stderr.decode()
    assert "never retrieved" not in log and "Traceback" not in log, log[-2000:]
    await wait_until(lambda: not any(alive(p) for p in workers), 15, "hash workers to exit")


async def test_sigkill_leaves_no_orphaned_workers() -> None:
    pool = HostilePool(difficulty="0.0005")
    await pool.start()
    proc = await start_agent(pool)
    try:
        await wait_until(lambda: len(descendants(proc.pid)) >= 3, 60, "hash workers (forkserver + 2)")
        workers = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        await wait_until(lambda: not any(alive(p) for p in workers), 15, "orphaned hash workers to exit")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await pool.stop()


async def test_duration_honoured_under_flood() -> None:
    pool = HostilePool(difficulty="0.0005")
    pool.flood = True
    await pool.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openmos.cli.main", "run", "--no-status", "--no-api", "--hardware", "cpu:1",
        "--pool", pool.url, "--user", "me.rig", "--duration", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 90)  # 5 s of mining, start-up and shutdown
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await pool.stop()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert len(pool.sessions) >= 1
