"""A bounded pool of worker threads for blocking calls, with per-call timeouts.

Why not ``concurrent.futures.ThreadPoolExecutor``: a libvirt or storage call can hang for
ever (a dead NFS server, a stuck QEMU monitor). In a plain pool such a call holds its thread
for good, and a few of them starve every later call. Here each call has a deadline; when it
passes, the caller gets :class:`~vdsm_py.errors.CallTimeout` at once, the stuck thread is
written off (it exits by itself if the call ever returns) and a fresh worker takes its place,
so the pool keeps its size. Written-off threads are counted and capped, so a storm of hung
calls cannot spawn threads without bound: past the cap, calls queue until a slot frees.

The pool is used from the asyncio loop (:meth:`Executor.run`); it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vdsm_py.errors import CallTimeout, ResourceUnavailable

log = logging.getLogger("vdsm_py.executor")

T = TypeVar("T")

_STOP = object()


@dataclass(slots=True)
class _Task:
    fn: Callable[[], Any]
    name: str
    timeout: float | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    started: float = 0.0
    worker: _Worker | None = field(default=None, repr=False)


class _Worker:
    """One thread taking tasks from the shared queue until told to stop or written off."""

    _ids = itertools.count()

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self.discarded = False
        self.task: _Task | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"{pool.name}/{next(self._ids)}", daemon=True
        )

    def _run(self) -> None:
        while not self.discarded:
            item = self.pool._queue.get()
            if item is _STOP:
                return
            task: _Task = item
            if task.future.done():  # cancelled or timed out while queued
                continue
            task.started = time.monotonic()
            task.worker = self
            self.task = task
            try:
                result = task.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
                _deliver(task, _set_exception, exc)
            else:
                _deliver(task, _set_result, result)
            finally:
                self.task = None
                task.worker = None
        self.pool._written_off_done(self)


def _deliver(task: _Task, setter: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    """Hand a result to the caller's loop; if that loop is gone, nobody is waiting."""
    try:
        task.loop.call_soon_threadsafe(setter, task.future, value)
    except RuntimeError:
        log.debug("result of %s dropped: its event loop is closed", task.name)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Executor:
    """``workers`` threads, each call bounded by ``default_timeout`` unless told otherwise.

    ``max_written_off`` caps how many stuck threads may exist at once; beyond it, timed-out
    workers are not replaced until one of them returns, and new calls wait in the queue.
    ``max_queued`` bounds the backlog: past it, :meth:`run` fails fast with
    :class:`~vdsm_py.errors.ResourceUnavailable` rather than piling up work.
    """

    def __init__(
        self,
        workers: int = 8,
        default_timeout: float = 60.0,
        *,
        max_written_off: int = 32,
        max_queued: int = 1000,
        name: str = "worker",
    ) -> None:
        self.name = name
        self.size = workers
        self.default_timeout = default_timeout
        self.max_written_off = max_written_off
        self.max_queued = max_queued
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._written_off: set[_Worker] = set()
        self._queued = 0
        self._closed = False
        for _ in range(workers):
            self._spawn()

    # -- public -----------------------------------------------------------------------

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker; raise CallTimeout past the deadline.

        The caller's context variables (log context, call id) travel with the call.
        """
        if self._closed:
            raise ResourceUnavailable("The daemon is shutting down")
        if self._queued >= self.max_queued:
            raise ResourceUnavailable("Too many pending operations, try again later")
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        task = _Task(
            fn=lambda: ctx.run(fn, *args, **kwargs),
            name=name or str(getattr(fn, "__qualname__", None) or repr(fn)),
            timeout=self.default_timeout if timeout is None else timeout,
            loop=loop,
            future=loop.create_future(),
        )
        self._queued += 1
        self._queue.put(task)
        future = task.future
        if task.timeout is None or task.timeout <= 0:
            try:
                return await future
            finally:
                self._queued -= 1
        # The caller waits on a future of its own, woken by the result or by the deadline
        # (asyncio.timeout + shield, with less machinery): cancelling the caller never
        # cancels the call, a timeout writes the worker off.
        waiter = loop.create_future()

        def wake(_: object) -> None:
            if not waiter.done():
                waiter.set_result(None)

        future.add_done_callback(wake)
        deadline = loop.call_later(task.timeout, wake, None)
        try:
            await waiter
        finally:
            deadline.cancel()
            self._queued -= 1
        if not future.done():
            future.remove_done_callback(wake)
            self._on_timeout(task)
            raise CallTimeout(f"{task.name} did not finish within {task.timeout:g} s")
        return future.result()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        with self._lock:
            busy = sum(1 for w in self._workers if w.task is not None)
            return {
                "workers": len(self._workers),
                "busy": busy,
                "written_off": len(self._written_off),
                "queued": self._queued,
            }

    def close(self) -> None:
        """Stop the workers once they finish what they run; never waits for stuck ones."""
        self._closed = True
        with self._lock:
            workers = list(self._workers)
        for _ in workers:
            self._queue.put(_STOP)

    # -- internals --------------------------------------------------------------------

    def _spawn(self) -> None:
        worker = _Worker(self)
        with self._lock:
            self._workers.add(worker)
        worker.thread.start()

    def _on_timeout(self, task: _Task) -> None:
        if not task.future.done():
            task.future.cancel()
        worker = task.worker
        if worker is None or worker.discarded:
            return  # still queued (it will be skipped) or already written off
        with self._lock:
            if len(self._written_off) >= self.max_written_off:
                log.error(
                    "call %s stuck past %ss; %d workers already stuck, not replacing",
                    task.name, task.timeout, len(self._written_off),
                )
                return
            worker.discarded = True
            self._workers.discard(worker)
            self._written_off.add(worker)
        log.warning(
            "call %s stuck past %ss in %s: worker written off and replaced",
            task.name, task.timeout, worker.thread.name,
        )
        if not self._closed:
            self._spawn()

    def _written_off_done(self, worker: _Worker) -> None:
        with self._lock:
            self._written_off.discard(worker)
        log.info("written-off worker %s returned and exited", worker.thread.name)
