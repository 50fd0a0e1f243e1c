"""Persisted SPM tasks on the master domain: what is written when, and why that is enough.

Layout (VDSM's place and names): ``<master sd>/master/tasks/<taskID>/<taskID>.task``, one
record file per task, made of append-only *blocks* of ``field = value`` lines, each closed
by ``commit = <crc32 of the block's other lines>``. Later blocks override fields of earlier
ones. Block 0 holds the header (id, name = the verb, tag, resources, njobs,
metadataVersion), the plan (``job<N> = {target, runcmd, undo, forward, params}`` as JSON)
and ``state = queued``; a later block holds state, begun, code, message and result. A block
without its commit line, or whose checksum does not match, is a torn append: it and
anything after it are ignored, and cut off when the record is loaded (so that what
recovery appends next is read).

What is written when (:mod:`storage.tasks` decides; "durable" = fdatasync of the record,
and the first time also fsync of the task directory and of ``tasks/``, so the record can
be found after a power loss):

1. ``schedule``: the directory and block 0 - *not* durable;
2. before the first step that has an undo: ``state = running``, ``begun = N+1`` - durable;
3. before the first ``forward`` step (the point of no return): ``begun = N+1`` - durable;
4. the end (finished, recovered or failed), durable *before* the task reports it.

Nothing else (leading checks, further steps, the start of a rollback) is written. Why that
is enough:

- A durable block makes every earlier one durable (fdatasync flushes the whole file), and
  torn blocks can only be non-durable ones at the tail, so a loaded record is always a state
  the task really went through.
- No step that touches storage runs before (2) is durable (a step's preparer may run
  before it, but it only makes unnamed files, which a crash or a power loss takes away:
  see :mod:`storage.unnamed`). A record still ``queued`` (or a
  directory without a valid block 0: only possible after a power loss before (2)) therefore
  belongs to a task that changed nothing: it ends aborted (411) with nothing undone, or its
  directory is dropped (after a power loss such a task may thus be unknown, 401, to the next
  SPM; after a process kill the page cache still holds its plan). Steps before (2) are
  checks run under the task's resource locks.
- After (2) and before (3), any step up to the point of no return may have run, the last
  one half way. Recovery undoes every one of them, last first: undos are idempotent and
  tolerate a step that never ran or ran half way; since the leading checks passed under the
  task's locks, an undo can only remove what this task made.
- After (3), recovery re-runs the steps from that forward step on; they must be idempotent
  re-runs (including over a state where later ones already ran).
- (4) is durable before anyone sees the result, so a reported result is never lost. Before
  (4) nothing was reported: recovery rolls the task back (even one whose steps all ran, if
  it has no point of no return) or forward, and records that end instead.
- A step's own storage writes must be durable when the task ends (volume metadata is
  replaced by fsync'd files, qemu-img syncs what it creates, new directories are fsync'd
  into their parent), so (4) never reports a result that a power loss could take away.

Cost for a ``Volume.create`` task: 4 fsyncs for its record (2: fdatasync and the two
directories; 4: fdatasync), where a file per step and per state took 23.
Removal (``Task.clear``) renames the directory to ``.backup`` first; leftover
``.backup``/``.temp`` directories are discarded at load. Blocking file I/O: call from
workers. Must not run steps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path

from storage.metadata import fsync_dir, write_all
from storage.tasks import STATES, Step, Task
from storage.validation import check_uuid
from vdsm_py.errors import InvalidParameter, TaskMetaDataLoadError, TaskMetaDataSaveError

log = logging.getLogger("vdsm_py.storage.tasks")

MASTER_FS_DIR = "master"
TASKS_DIR = "tasks"
VMS_DIR = "vms"
TASK_EXT = ".task"
TEMP_EXT, BACKUP_EXT = ".temp", ".backup"
COMMIT = b"commit = "
METADATA_VERSION = 2


def block(fields: dict[str, object]) -> bytes:
    """One record block: the fields, then the commit line sealing them."""
    text = "".join(f"{key} = {str(value).replace(chr(10), ' ')}\n"
                   for key, value in fields.items()).encode("utf-8")
    return text + COMMIT + f"{zlib.crc32(text):08x}\n".encode()


def parse_blocks(data: bytes) -> dict[str, str] | None:
    """The fields of the intact blocks, later ones winning; None if block 0 is not intact."""
    return intact_blocks(data)[0]


def intact_blocks(data: bytes) -> tuple[dict[str, str] | None, int]:
    """:func:`parse_blocks` and the length of the intact blocks (what follows is torn)."""
    fields: dict[str, str] | None = None
    block_start = start = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn tail
        if line.startswith(COMMIT):
            text = data[block_start:start]
            if line[len(COMMIT):].strip() != f"{zlib.crc32(text):08x}".encode():
                break  # torn or damaged block: it and what follows never happened
            try:
                lines = text.decode("utf-8").splitlines()
            except UnicodeDecodeError:
                break
            fields = {} if fields is None else fields
            for entry in lines:
                key, sep, value = entry.partition(" = ")
                if sep:
                    fields[key.strip()] = value
            block_start = start + len(line)
        start += len(line)
    return fields, block_start


def _is_task_id(name: str) -> bool:
    try:
        check_uuid("taskID", name)
    except InvalidParameter:
        return False
    return True


class TaskStore:
    """The tasks directory of one master domain."""

    def __init__(self, root: Path) -> None:
        self.root = root  # <master sd>/master/tasks
        self._found: set[str] = set()  # tasks whose directory entries are durable

    @classmethod
    def of_master(cls, domain_root: Path) -> TaskStore:
        """Create the master tree (``master/tasks``, ``master/vms``) as VDSM's spmStart does."""
        master = domain_root / MASTER_FS_DIR
        for path in (master, master / TASKS_DIR, master / VMS_DIR):
            path.mkdir(mode=0o755, exist_ok=True)
        return cls(master / TASKS_DIR)

    def task_dir(self, task_id: str) -> Path:
        return self.root / task_id

    def record_path(self, task_id: str) -> Path:
        return self.task_dir(task_id) / (task_id + TASK_EXT)

    # -- writing ------------------------------------------------------------------------

    @staticmethod
    def _job(step: Step) -> str:
        return json.dumps({"target": step.target, "runcmd": step.action,
                           "undo": step.undo or "", "forward": int(step.forward),
                           "params": dict(step.args)}, sort_keys=True)

    @staticmethod
    def _state(task: Task, state: str) -> dict[str, object]:
        return {"state": state, "begun": task.begun, "code": task.code,
                "message": task.message, "result": task.result}

    def create(self, task: Task) -> None:
        """Write (1): the directory and block 0, not synced (see the module docstring)."""
        header: dict[str, object] = {
            "id": task.id, "name": task.verb, "tag": task.tag,
            "resources": ",".join(task.resources), "njobs": len(task.steps),
            "metadataVersion": METADATA_VERSION}
        header.update({f"job{i}": self._job(step) for i, step in enumerate(task.steps)})
        header.update(self._state(task, task.state))
        try:
            self.task_dir(task.id).mkdir(mode=0o755)
        except FileExistsError:
            raise TaskMetaDataSaveError(f"task {task.id} exists already") from None
        except OSError as exc:
            raise TaskMetaDataSaveError(f"cannot persist task {task.id}: {exc}") from None
        try:
            fd = os.open(self.record_path(task.id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
            try:
                write_all(fd, block(header))
            finally:
                os.close(fd)
        except OSError as exc:
            shutil.rmtree(self.task_dir(task.id), ignore_errors=True)
            raise TaskMetaDataSaveError(f"cannot persist task {task.id}: {exc}") from None

    def record(self, task: Task, state: str) -> None:
        """Writes (2)-(4): append ``state`` with the task's progress, durably."""
        try:
            fd = os.open(self.record_path(task.id), os.O_WRONLY | os.O_APPEND)
            try:
                write_all(fd, block(self._state(task, state)))
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if task.id not in self._found:  # block 0 was written unsynced, in a new directory
                fsync_dir(self.task_dir(task.id))
                fsync_dir(self.root)
                self._found.add(task.id)
        except OSError as exc:
            raise TaskMetaDataSaveError(f"cannot persist task {task.id}: {exc}") from None

    def remove(self, task_id: str) -> None:
        final = self.task_dir(task_id)
        doomed = final.with_name(task_id + BACKUP_EXT)
        self._found.discard(task_id)
        try:
            os.rename(final, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)
        fsync_dir(self.root)

    # -- reading ------------------------------------------------------------------------

    def _fields(self, task_id: str) -> dict[str, str] | None:
        """The record's fields; a torn tail is cut off, so that later appends are read."""
        path = self.record_path(task_id)
        try:
            data = path.read_bytes()
            fields, length = intact_blocks(data)
            if fields is not None and length < len(data):
                log.warning("task %s: dropping the torn end of its record (%d bytes)",
                            task_id, len(data) - length)
                os.truncate(path, length)  # durable with the next append's fdatasync
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TaskMetaDataLoadError(f"cannot load task {task_id}: {exc}") from None
        return fields

    def load(self, task_id: str) -> Task:
        fields = self._fields(task_id)
        if fields is None:
            raise TaskMetaDataLoadError(f"task {task_id} has no intact record")
        try:
            if fields.get("id") != task_id or fields.get("state") not in STATES:
                raise ValueError(f"bad task record {fields}")
            steps = []
            for index in range(int(fields["njobs"])):
                job = json.loads(fields[f"job{index}"])
                step = Step(target=job["target"], action=job["runcmd"], args=job["params"],
                            undo=job["undo"] or None, forward=job["forward"] == 1)
                step.check()
                steps.append(step)
            task = Task(id=task_id, verb=fields.get("name", ""), steps=steps,
                        tag=fields.get("tag", ""), state=fields["state"],
                        resources=tuple(r for r in fields.get("resources", "").split(",") if r),
                        begun=min(int(fields.get("begun", "0")), len(steps)),
                        code=int(fields.get("code", "0")), message=fields.get("message", ""),
                        result=fields.get("result", ""))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise TaskMetaDataLoadError(f"cannot load task {task_id}: {exc}") from None
        if task.is_done():
            task.done.set()
        return task

    def load_all(self) -> list[Task]:
        """Every persisted task; directories of tasks that never began are discarded."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        tasks = []
        for name in names:
            path = self.root / name
            if name.endswith((TEMP_EXT, BACKUP_EXT)):
                log.info("discarding unfinished task directory %s", path)
                shutil.rmtree(path, ignore_errors=True)
                continue
            if not _is_task_id(name) or not path.is_dir():
                log.warning("ignoring %s in the tasks directory", path)
                continue
            try:
                if self._fields(name) is None:  # lost before (2): it never touched storage
                    log.info("discarding task %s: its record was never made durable", name)
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                tasks.append(self.load(name))
            except TaskMetaDataLoadError as exc:
                log.error("skipping task %s (kept for a human to look at): %s", name, exc)
        return tasks
