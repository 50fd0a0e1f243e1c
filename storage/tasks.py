"""SPM tasks: ordered steps, each paired with its rollback, run so that no crash leaves a
metadata-changing operation half done.

The model is VDSM's ``task.py``: a task goes through inner states (``init``, ``queued``,
``running``, ``finished``, ``aborting``, ``recovering``, ``recovered``, ``failed``...) that
the wire reports in VDSM's older vocabulary (``taskState`` running/finished/aborting/
cleaning, ``taskResult`` ""/success/cleanSuccess/cleanFailure). A :class:`Step` names a
method of a *target* object (``"volume:<sdUUID>"`` resolves to that domain's
:class:`storage.volume.Volumes`) and the method that undoes it, with JSON-able arguments,
so a step can be undone or re-run after a restart from its persisted record alone. A
target class lists the methods a step may call in ``STEP_ACTIONS``; nothing else is ever
called from a task file.

Persistence (what is written when and why it is enough: :mod:`storage.task_store`): the
plan when scheduled; a durable record before the first step that has an undo and before the
first ``forward`` step; the end state, durable before it is reported. On an error or
``Task.stop`` the undos of the begun steps run in reverse. ``forward`` marks the point of no
return (deleting data): once such a step has begun the task is only ever completed, and
recovery re-runs the steps from the first forward one on (which must therefore be
idempotent re-runs) instead of undoing. After a restart, :func:`recover` rolls every
unfinished task back - undoing every step before the point of no return, so an undo must
tolerate its step never having run or having run half way - or forward past it. A step's
own storage writes must be durable by the time the task ends.

A target class may also list, in ``STEP_PREPARES``, a *preparer* of a step: the task's
owner may call :func:`prepare` before running the task (the task manager does when a worker
is idle), and ``prepare_<action>(**args)`` of the task's first recorded step then starts
the volatile part of that step (work that leaves nothing a crash could find, e.g. qemu-img
writing into an unnamed file), so that it runs while the record syncs; it returns a handle
with ``discard()``, or None. The step takes its handle with
``current_step().take_prepared()`` (None: it does all itself, as after a restart); a handle
not taken is discarded when the task ends.

Blocking (the steps do storage I/O): run from task worker threads. Must not know volumes,
pools or the layout of the persisted records (see :mod:`storage.task_store`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from vdsm_py.errors import (
    ActionStopped,
    TaskAborted,
    TaskMetaDataLoadError,
    TaskMetaDataSaveError,
    VdsmError,
)

log = logging.getLogger("vdsm_py.storage.tasks")

# -- states (VDSM task.State) and their wire spelling -----------------------------------------
INIT, QUEUED, RUNNING, FINISHED = "init", "queued", "running", "finished"
ABORTING, RECOVERING, RECOVERED, FAILED = "aborting", "recovering", "recovered", "failed"
STATES = (INIT, QUEUED, RUNNING, FINISHED, ABORTING, RECOVERING, RECOVERED, FAILED)
DONE = frozenset({FINISHED, RECOVERED, FAILED})
WIRE_STATE = {INIT: "init", QUEUED: "running", RUNNING: "running", FINISHED: "finished",
              ABORTING: "aborting", RECOVERING: "cleaning", RECOVERED: "finished",
              FAILED: "finished"}
WIRE_RESULT = {FINISHED: "success", RECOVERED: "cleanSuccess", FAILED: "cleanFailure"}

Resolver = Callable[[str], object]
Hook = Callable[["Task", "Step"], None]


@dataclass(frozen=True)
class Step:
    """One forward step: ``resolve(target).<action>(**args)``; ``undo`` takes the same args."""

    target: str
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)
    undo: str | None = None
    forward: bool = False

    @property
    def recorded(self) -> bool:
        """Whether recovery must know the step may have run (it has an undo, or is forward)."""
        return self.undo is not None or self.forward

    def check(self) -> None:
        kind, sep, _ = self.target.partition(":")
        if not sep or not kind.isidentifier():
            raise ValueError(f"step target must be '<kind>:<id>': {self.target!r}")
        for name in (self.action, self.undo or "undo"):
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"step method name not allowed: {name!r}")
        json.dumps(dict(self.args))  # must survive the persisted record


def call(resolve: Resolver, target: str, method: str, args: Mapping[str, Any]) -> Any:
    """Call a step method, refusing any method its class does not list in STEP_ACTIONS."""
    obj = resolve(target)
    if method not in getattr(type(obj), "STEP_ACTIONS", frozenset()):
        raise TaskMetaDataLoadError(f"{type(obj).__name__}.{method} is not a step action")
    return getattr(obj, method)(**args)


class Prepared(Protocol):
    """What a step's preparer started (see the module docstring)."""

    def discard(self) -> None:
        """Stop it and free it; nothing it made survives (idempotent)."""


class Store(Protocol):
    """Where a task's progress is persisted (see :class:`storage.task_store.TaskStore`)."""

    def record(self, task: Task, state: str) -> None:
        """Durably record ``state`` with the task's ``begun``, code, message and result."""


@dataclass(eq=False)
class Task:
    id: str
    verb: str  # VDSM's name of the operation (createVolume...)
    steps: list[Step]
    tag: str = "spm"
    resources: tuple[str, ...] = ()
    state: str = INIT
    begun: int = 0  # steps that may have run (persisted: see storage.task_store)
    code: int = 0
    message: str = "Task is initializing"
    result: str = ""
    # not persisted
    prepared: dict[int, Prepared] = field(default_factory=dict, repr=False)
    stop_requested: bool = False
    progress: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def is_done(self) -> bool:
        return self.state in DONE

    def committed(self) -> bool:
        """Past the point of no return: a ``forward`` step has begun."""
        return any(s.forward for s in self.steps[: self.begun])

    def status(self) -> dict[str, Any]:
        """VDSM's TaskStatus (``deprecated_getStatus``)."""
        return {"taskID": self.id, "taskState": WIRE_STATE[self.state],
                "taskResult": WIRE_RESULT.get(self.state, ""), "code": self.code,
                "message": self.message}

    def info(self) -> dict[str, str]:
        return {"id": self.id, "verb": self.verb}


class StepContext:
    """What a running step may ask of its task: report progress, notice Task.stop."""

    def __init__(self, task: Task | None = None) -> None:
        self.task = task
        self.index = -1  # the step running

    def take_prepared(self) -> Prepared | None:
        """The running step's prepared part (see the module docstring), now its own."""
        return self.task.prepared.pop(self.index, None) if self.task is not None else None

    def progress(self, percent: float) -> None:
        if self.task is not None:
            self.task.progress = max(0.0, min(100.0, float(percent)))
        self.check_stopped()

    def check_stopped(self) -> None:
        task = self.task
        if task is not None and task.stop_requested and not task.committed():
            raise ActionStopped(f"task {task.id} was stopped")


_NO_TASK = StepContext()
_current: ContextVar[StepContext | None] = ContextVar("vdsm_py_task_step", default=None)


def current_step() -> StepContext:
    """The context of the step running in this thread (a no-op one outside tasks)."""
    return _current.get() or _NO_TASK


def _persist(store: Store | None, task: Task, state: str) -> None:
    """Enter ``state``; an end state is durable before anyone can see it."""
    if store is not None and state in DONE:
        try:
            store.record(task, state)
        except TaskMetaDataSaveError as exc:  # never report an end that is not durable
            log.error("task %s (%s): cannot record its end %s: %s", task.id, task.verb,
                      state, exc)
            _fail_with(task, exc)
            state = FAILED  # in memory; after a restart recovery ends it from the record
    task.state = state
    if task.is_done():
        task.done.set()


def _no_return_index(task: Task) -> int:
    """Index of the first ``forward`` step (the point of no return), or the step count."""
    return next((i for i, s in enumerate(task.steps) if s.forward), len(task.steps))


def _needs_record(task: Task, index: int) -> bool:
    """Before the first step with an undo and before the point of no return."""
    step = task.steps[index]
    if step.forward:
        return not task.committed()
    return step.undo is not None and not any(s.recorded for s in task.steps[:index])


def _first_record_index(task: Task) -> int | None:
    """The step before which the task's first durable record is written."""
    return next((i for i in range(len(task.steps)) if _needs_record(task, i)), None)


def prepare(task: Task, resolve: Resolver) -> None:
    """Start the volatile part of the task's first recorded step if its target lists a
    preparer. Never raises: a preparer that fails leaves the step to do all its work."""
    index = _first_record_index(task)
    if index is None or index in task.prepared:
        return
    step = task.steps[index]
    try:
        obj = resolve(step.target)
        method = getattr(type(obj), "STEP_PREPARES", {}).get(step.action)
        handle = getattr(obj, method)(**step.args) if method else None
    except Exception as exc:  # noqa: BLE001 - the step does it all itself then
        log.info("task %s: cannot prepare step %d (%s): %s", task.id, index, step.action, exc)
        return
    if handle is not None:
        task.prepared[index] = handle


def discard_prepared(task: Task) -> None:
    """Discard what was prepared and not taken by its step."""
    while task.prepared:
        _, handle = task.prepared.popitem()
        try:
            handle.discard()
        except Exception:  # the others are still discarded
            log.exception("task %s: cannot discard a prepared step", task.id)


def _fail_with(task: Task, exc: BaseException) -> None:
    task.error = exc
    task.code = exc.code if isinstance(exc, VdsmError) else 100
    task.message = str(exc).replace("\n", " ") or type(exc).__name__


def _run_step(task: Task, index: int, resolve: Resolver, store: Store | None,
              hook: Hook | None) -> None:
    step = task.steps[index]
    if store is not None and _needs_record(task, index):
        task.begun = max(task.begun, index + 1)
        store.record(task, RUNNING)  # durable before the step touches storage
    task.begun = max(task.begun, index + 1)
    task.message = f"running job {index + 1} of {len(task.steps)}"
    if hook is not None:
        hook(task, step)
    log.debug("task %s: step %d %s.%s", task.id, index, step.target, step.action)
    call(resolve, step.target, step.action, step.args)


def _run_from(task: Task, first: int, resolve: Resolver, store: Store | None,
              hook: Hook | None) -> None:
    context = StepContext(task)
    token = _current.set(context)
    try:
        for index in range(first, len(task.steps)):
            if task.stop_requested and not task.committed():
                raise ActionStopped(f"task {task.id} was stopped")
            context.index = index
            _run_step(task, index, resolve, store, hook)
    finally:
        _current.reset(token)
        discard_prepared(task)


def roll_back(task: Task, resolve: Resolver, store: Store | None) -> None:
    """Undo every begun step, last first; best effort: one failed undo does not stop the rest."""
    _persist(store, task, RECOVERING)
    failed = []
    for index in reversed(range(task.begun)):
        step = task.steps[index]
        if step.undo is None:
            continue
        try:
            call(resolve, step.target, step.undo, step.args)
        except Exception as exc:  # noqa: BLE001 - every undo is tried; the task ends failed
            log.error("task %s: undo %s of step %d failed: %s", task.id, step.undo, index, exc)
            failed.append(f"{step.undo}: {exc}")
    if failed:
        task.message = f"{task.message}; rollback failed: {'; '.join(failed)}"
        _persist(store, task, FAILED)
    else:
        task.message = f"{task.message}; rolled back"
        _persist(store, task, RECOVERED)
    log.info("task %s (%s) rolled back: %s", task.id, task.verb, task.state)


def run(task: Task, resolve: Resolver, store: Store | None, hook: Hook | None = None) -> None:
    """Run a new task to its end: finished, or rolled back (recovered/failed)."""
    _persist(store, task, RUNNING)
    try:
        _run_from(task, 0, resolve, store, hook)
    except Exception as exc:  # noqa: BLE001 - any failure ends the task, reported in its status
        _fail_with(task, exc)
        log.warning("task %s (%s) failed at step %d: %s", task.id, task.verb, task.begun, exc)
        if task.committed():  # past the point of no return: cannot undo; reported failed
            _persist(store, task, FAILED)
        else:
            roll_back(task, resolve, store)
        return
    task.code, task.message = 0, f"{len(task.steps)} jobs completed successfully"
    _persist(store, task, FINISHED)
    log.info("task %s (%s) finished", task.id, task.verb)


def recover(task: Task, resolve: Resolver, store: Store | None) -> None:
    """Bring a task loaded after a restart to an end: back, or forward when committed."""
    if task.is_done():
        return
    if task.state in (ABORTING, RECOVERING) or not task.committed():
        if task.begun:  # recorded at its first undoable step; later ones may have run too
            task.begun = max(task.begun, _no_return_index(task))
        if task.code == 0:
            task.code = TaskAborted.code
            task.message = "interrupted before it finished (the SPM stopped)"
        roll_back(task, resolve, store)
        return
    log.info("task %s (%s): rolling forward from step %d", task.id, task.verb, task.begun - 1)
    _persist(store, task, RUNNING)
    try:
        _run_from(task, task.begun - 1, resolve, store, None)  # recorded at its first forward step
    except Exception as exc:  # noqa: BLE001 - reported in the task's status
        _fail_with(task, exc)
        log.error("task %s (%s): rolling forward failed: %s", task.id, task.verb, exc)
        _persist(store, task, FAILED)
        return
    task.code = 0
    task.message = f"{len(task.steps)} jobs completed successfully (completed by recovery)"
    _persist(store, task, FINISHED)


def run_inline(resolve: Resolver, steps: list[Step], verb: str = "inline") -> None:
    """Run steps now, in this thread, without persistence; on error undo and re-raise."""
    task = Task(id="inline", verb=verb, steps=steps)
    run(task, resolve, None)
    if task.error is not None:
        raise task.error
