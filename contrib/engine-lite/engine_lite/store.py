"""Runs repository calls off the event loop, in order, on one worker thread.

One thread keeps writes in the order the engine issued them (a host's status changes are
never reordered) and keeps SQLite's single connection single-threaded in practice. Must not
know what the calls do.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from engine_lite.repo import Repository

T = TypeVar("T")


class Store:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-db")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.repo.close()
