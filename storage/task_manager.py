"""The SPM's task manager: schedules, runs, reports, stops, clears and recovers tasks.

Owned by the SPM role of one connected pool (created at ``spmStart`` over the master
domain's ``master/tasks``, dropped at ``spmStop``). ``schedule`` persists a task and queues
it to a small pool of daemon worker threads, returning the task id at once (the verbs
answer with it, as VDSM's). A task holds its resources (``<sdUUID>/<imgUUID>`` names)
exclusively while it runs, so two tasks never change one image at once. Done tasks stay
listed until ``Task.clear`` (VDSM's manual clean policy for SPM tasks).

Worker threads are daemon threads on purpose: a daemon killed mid-task leaves the task's
records on the master domain and :meth:`recover_dumped` rolls it back or forward when this
or another host next becomes SPM.

Test hook (``[storage] task_hook_dir``, off by default): before a step runs, if
``<dir>/<action>`` is a FIFO the worker opens it, which blocks until a writer opens it (a
test thereby knows the step is reached and can SIGKILL the daemon), and reads it to EOF;
the text ``fail`` makes the step fail (injected fault).

When a task ends (its end record durable), ``on_done(task)`` is called from the worker
thread that ran it: the service publishes it as an event, so clients need not poll.

Head start: when a worker is idle (the task will start at once), ``schedule`` also starts
the volatile part of the task's first recorded step (:func:`storage.tasks.prepare`, e.g.
qemu-img into an unnamed file) before it returns, so it runs while the id is answered, the
worker takes the task and its record syncs. Never more than one per idle worker; a task
that has to wait for a worker gets none (the host is busy: what a head start costs in CPU
would only slow the others).

Blocking parts (persisting, recovery) run from the executor. Must not know volumes.
"""

from __future__ import annotations

import logging
import queue
import stat
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from storage import tasks as tk
from storage.task_store import TaskStore
from vdsm_py.errors import (
    AddTaskError,
    StorageError,
    TaskClearError,
    TaskInProgress,
    UnknownTask,
)

log = logging.getLogger("vdsm_py.storage.tasks")


def fifo_hook(directory: Path) -> tk.Hook:
    """The test-only pause/fault point described in the module docstring."""

    def hook(task: tk.Task, step: tk.Step) -> None:
        path = directory / step.action
        try:
            if not stat.S_ISFIFO(path.stat().st_mode):
                return
        except FileNotFoundError:
            return
        log.warning("task %s: paused before %s on test hook %s", task.id, step.action, path)
        with open(path, "rb") as fifo:  # blocks until the test opens it for writing
            order = fifo.read().decode(errors="replace").strip()
        if order == "fail":
            raise StorageError(f"fault injected before {step.action} by test hook {path}")

    return hook


class TaskManager:
    def __init__(self, store: TaskStore, resolve: tk.Resolver, *, workers: int = 10,
                 max_tasks: int = 500, hook_dir: Path | None = None,
                 on_done: Callable[[tk.Task], None] | None = None) -> None:
        self.store = store
        self.on_done = on_done
        self.resolve = resolve
        self.max_tasks = max_tasks
        self.hook = fifo_hook(hook_dir) if hook_dir else None
        self._tasks: dict[str, tk.Task] = {}
        self._lock = threading.Lock()
        self._resources: dict[str, threading.Lock] = {}
        self._queue: queue.Queue[tk.Task | None] = queue.Queue()
        self._idle = 0  # workers waiting for a task
        self._starting = 0  # tasks given a head start, not queued yet
        self._threads = [threading.Thread(target=self._work, name=f"task/{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- scheduling and running ---------------------------------------------------------

    def schedule(self, verb: str, steps: list[tk.Step], resources: Iterable[str] = (),
                 *, tag: str = "spm") -> str:
        """Persist a new task and queue it; the id is returned before any step runs."""
        for step in steps:
            step.check()
        task = tk.Task(id=str(uuid.uuid4()), verb=verb, steps=list(steps), tag=tag,
                       resources=tuple(sorted(set(resources))), state=tk.QUEUED,
                       message="Task is queued")
        with self._lock:
            if len(self.unfinished()) >= self.max_tasks:
                raise AddTaskError(f"too many unfinished tasks ({self.max_tasks})")
            self._tasks[task.id] = task
            ahead = self._idle > self._queue.qsize() + self._starting
            self._starting += ahead
        try:
            if ahead:
                tk.prepare(task, self.resolve)
            self.store.create(task)
        except BaseException:
            tk.discard_prepared(task)
            with self._lock:
                self._tasks.pop(task.id, None)
                self._starting -= ahead
            raise
        log.info("task %s (%s) scheduled: %d steps, resources %s", task.id, verb, len(steps),
                 ",".join(task.resources))
        self._queue.put(task)
        with self._lock:
            self._starting -= ahead
        return task.id

    def _resource_locks(self, names: tuple[str, ...]) -> list[threading.Lock]:
        with self._lock:
            return [self._resources.setdefault(n, threading.Lock()) for n in names]

    def _take(self) -> tk.Task | None:
        with self._lock:
            self._idle += 1
        try:
            return self._queue.get()
        finally:
            with self._lock:
                self._idle -= 1

    def _work(self) -> None:
        while (task := self._take()) is not None:
            locks = self._resource_locks(task.resources)  # sorted names: no lock-order cycle
            for lock in locks:
                lock.acquire()
            try:
                tk.run(task, self.resolve, self.store, self.hook)
            except Exception:  # persisting failed; the task stays for recovery
                log.exception("task %s could not be run to its end", task.id)
            finally:
                for lock in reversed(locks):
                    lock.release()
            if task.is_done():
                self._announce(task)

    def _announce(self, task: tk.Task) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done(task)
        except Exception:  # a listener's fault must not stop the worker
            log.exception("task %s: its end could not be announced", task.id)

    def recover_dumped(self) -> list[str]:
        """Load the tasks persisted on the master domain and bring each to its end."""
        recovered = []
        for task in self.store.load_all():
            with self._lock:
                if task.id in self._tasks:
                    continue
                self._tasks[task.id] = task
            if not task.is_done():
                log.warning("task %s (%s) was interrupted at step %d in state %s; recovering",
                            task.id, task.verb, task.begun, task.state)
                tk.recover(task, self.resolve, self.store)
                recovered.append(task.id)
                if task.is_done():
                    self._announce(task)
        return recovered

    def shutdown(self, timeout: float = 0.0) -> None:
        """Ask running tasks to stop and let the workers end (they are daemon threads)."""
        for task in list(self._tasks.values()):
            task.stop_requested = True
        for _ in self._threads:
            self._queue.put(None)
        for task in list(self._tasks.values()):
            if timeout > 0 and not task.done.wait(timeout):
                log.warning("task %s still running at shutdown; recovery will finish it",
                            task.id)

    # -- the Task verbs -----------------------------------------------------------------

    def get(self, task_id: str) -> tk.Task:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise UnknownTask(f"Task id unknown: {task_id}")
        return task

    def has(self, task_id: str) -> bool:
        return task_id in self._tasks

    def unfinished(self) -> list[str]:
        return [t.id for t in list(self._tasks.values()) if not t.is_done()]

    def status(self, task_id: str) -> dict[str, Any]:
        return self.get(task_id).status()

    def info(self, task_id: str) -> dict[str, str]:
        return self.get(task_id).info()

    def all_statuses(self, tag: str | None = None) -> dict[str, dict[str, Any]]:
        return {t.id: t.status() for t in list(self._tasks.values()) if not tag or t.tag == tag}

    def all_info(self, tag: str | None = None) -> dict[str, dict[str, str]]:
        return {t.id: t.info() for t in list(self._tasks.values()) if not tag or t.tag == tag}

    def stop(self, task_id: str) -> None:
        """Ask a task to stop: it rolls back after its current step (ignored once committed)."""
        task = self.get(task_id)
        if not task.is_done():
            task.stop_requested = True
            log.info("task %s: stop requested", task_id)

    def clear(self, task_id: str) -> None:
        task = self.get(task_id)
        if not task.is_done():
            raise TaskClearError(f"task {task_id} is {task.state}, not finished")
        self.store.remove(task_id)
        with self._lock:
            self._tasks.pop(task_id, None)

    def wait(self, task_id: str, timeout: float | None = None) -> bool:
        return self.get(task_id).done.wait(timeout)

    def require_idle(self, sp_uuid: str) -> None:
        running = self.unfinished()
        if running:
            raise TaskInProgress(f"Pool {sp_uuid} task {running[0]} is running")

