"""openmos.base.tasks: the one way every layer stops its background tasks."""

from __future__ import annotations

import asyncio

from openmos.base.tasks import cancel_all, cancel_and_wait


async def test_cancel_all_cancels_every_task_before_waiting_and_swallows_their_failures() -> None:
    order: list[tuple[str, bool]] = []
    tasks: list[asyncio.Task[None]] = []

    async def loop(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            order.append((name, all(t.cancelling() for t in tasks)))  # every one already asked to stop

    async def crashed() -> None:
        raise RuntimeError("its own failure, reported when it happened")

    tasks += [asyncio.create_task(loop(n)) for n in ("a", "b", "c")]
    failed = asyncio.create_task(crashed())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all([*tasks, failed]), 30)
    assert sorted(order) == [("a", True), ("b", True), ("c", True)]
    assert all(t.done() for t in tasks) and failed.done()
    await cancel_all([])  # nothing to stop


async def test_a_task_stopping_itself_is_not_awaited() -> None:
    ran: list[str] = []

    async def closes_itself() -> None:
        me = asyncio.current_task()
        assert me is not None
        await cancel_and_wait(me)  # a reader closing its own session: no self-await, no cancel
        await cancel_all([me])
        ran.append("still running")

    await asyncio.wait_for(asyncio.create_task(closes_itself()), 30)
    await cancel_and_wait(None)
    assert ran == ["still running"]
