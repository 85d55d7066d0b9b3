"""Asyncio helpers for backends that outlive one event loop."""

from __future__ import annotations

import asyncio

__all__ = ["LoopLock"]


class LoopLock:
    """An ``asyncio.Lock`` made anew for each event loop that uses it.

    A backend built once and used by several ``asyncio.run`` calls (``run_task_sync`` in a
    loop, a notebook) would otherwise hold a lock bound to a closed loop, and a waiter
    fails with "bound to a different event loop". Use it as ``async with lock:``.
    """

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def __aenter__(self) -> None:
        await self._current().acquire()

    async def __aexit__(self, *exc: object) -> None:
        assert self._lock is not None
        self._lock.release()
