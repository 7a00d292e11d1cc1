"""Stopping asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, whatever it raises (its failure was its own to report).

    Nothing happens for ``None`` or for the running task itself (a reader closing its own session)."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every one of ``tasks`` first, then wait for each as ``cancel_and_wait`` does."""
    tasks = [t for t in tasks if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
