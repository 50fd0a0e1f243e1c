"""Crash safety of persisted SPM tasks: the worker is killed (a BaseException thrown out of
the task, so nothing more is written) at every point between two writes - the task record's
four writes (storage.task_store) and the steps' own - then a new SPM loads the records and
recovers. Power loss is simulated by dropping what was never synced. Each case pins the
state on disk after the crash and the recovery's result."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from storage import constants as sc
from storage import tasks as tk
from storage.task_manager import TaskManager
from storage.task_store import TaskStore, block
from storage.volume import VolumeSpec
from tests.unit.test_storage_tasks import Recorder, journal, master_store, step
from tests.unit.test_storage_volumes import IMG, V1, V2, vols  # noqa: F401 - fixture
from vdsm_py.errors import ClusterLockInitError, TaskMetaDataSaveError

TASK_ID = "6f1f0c52-1111-4a1e-8a53-0d1f2c3b4a5d"


class Crash(BaseException):
    """The worker dies here: no undo, no further record."""


class CrashingStore(TaskStore):
    """Dies at its ``crash_at``-th record (1: begun, ...), leaving ``torn`` bytes of it."""

    def __init__(self, root: Path, crash_at: int = 0, torn: int = 0) -> None:
        super().__init__(root)
        self.crash_at, self.torn, self.records = crash_at, torn, 0

    def record(self, task: tk.Task, state: str) -> None:
        self.records += 1
        if self.records == self.crash_at:
            with open(self.record_path(task.id), "ab") as f:
                f.write(block(self._state(task, state))[: self.torn])
            raise Crash
        super().record(task, state)


def crash_before(action: str, n: int | None = None) -> tk.Hook:
    def hook(task: tk.Task, s: tk.Step) -> None:
        if s.action == action and (n is None or s.args.get("n") == n):
            raise Crash
    return hook


def run_until_crash(store: TaskStore, steps: list[tk.Step], resolve: tk.Resolver,
                    hook: tk.Hook | None = None, *, prepared: bool = False) -> tk.Task:
    """Run until it ends or crashes; ``prepared``: given a head start (tasks.prepare) first,
    as the task manager does with an idle worker."""
    task = tk.Task(id=TASK_ID, verb="testVerb", steps=steps, state=tk.QUEUED)
    if prepared:
        tk.prepare(task, resolve)
    store.create(task)
    try:
        tk.run(task, resolve, store, hook)
    except Crash:
        pass
    return task


def recover(store: TaskStore, resolve: tk.Resolver) -> TaskManager:
    mgr = TaskManager(TaskStore(store.root), resolve, workers=1)
    mgr.recover_dumped()
    mgr.shutdown()
    return mgr


def on_disk(store: TaskStore) -> tuple[str, int]:
    task = TaskStore(store.root).load(TASK_ID)
    return task.state, task.begun


# check, two undoable steps, the point of no return, one more forward step
PLAN = [step(0, undo=None), step(1), step(2), step(3, undo=None, forward=True),
        step(4, undo=None, forward=True)]
ABORTED = ("cleanSuccess", 411)
ROLLED_FORWARD = ("success", 0)
# crash point -> (state on disk, begun on disk), what recovery runs, the result
CASES = {
    "after the plan, before the check": ({"hook": crash_before("do", 0)},
                                         ("queued", 0), [], ABORTED),
    "after the check, before record 1": ({"crash_at": 1}, ("queued", 0), [], ABORTED),
    "record 1 torn": ({"crash_at": 1, "torn": 20}, ("queued", 0), [], ABORTED),
    "after record 1, before step 1": ({"hook": crash_before("do", 1)}, ("running", 2),
                                      ["undo 2", "undo 1"], ABORTED),
    "after step 1, before step 2": ({"hook": crash_before("do", 2)}, ("running", 2),
                                    ["undo 2", "undo 1"], ABORTED),
    "after step 2, before record 2": ({"crash_at": 2}, ("running", 2),
                                      ["undo 2", "undo 1"], ABORTED),
    "record 2 torn": ({"crash_at": 2, "torn": 30}, ("running", 2), ["undo 2", "undo 1"],
                      ABORTED),
    "after record 2, before step 3": ({"hook": crash_before("do", 3)}, ("running", 4),
                                      ["do 3", "do 4"], ROLLED_FORWARD),
    "after step 3, before step 4": ({"hook": crash_before("do", 4)}, ("running", 4),
                                    ["do 3", "do 4"], ROLLED_FORWARD),
    "after step 4, before the end": ({"crash_at": 3}, ("running", 4), ["do 3", "do 4"],
                                     ROLLED_FORWARD),
    "end record torn": ({"crash_at": 3, "torn": 40}, ("running", 4), ["do 3", "do 4"],
                        ROLLED_FORWARD),
    "after the end": ({}, ("finished", 5), [], ("success", 0)),
}


@pytest.mark.parametrize("case", CASES)
def test_crash_between_two_writes_is_recovered_from_the_record(tmp_path, case):
    where, disk, redone, (result, code) = CASES[case]
    log = tmp_path / "journal"
    store = CrashingStore(master_store(tmp_path / "sd").root, where.get("crash_at", 0),
                          where.get("torn", 0))
    run_until_crash(store, PLAN, lambda t: Recorder(log), where.get("hook"))
    assert on_disk(store) == disk
    done = len(journal(log))
    mgr = recover(store, lambda t: Recorder(log))
    assert journal(log)[done:] == redone
    status = mgr.status(TASK_ID)
    assert (status["taskResult"], status["code"]) == (result, code), status
    assert on_disk(store)[0] in ("finished", "recovered")
    # a second SPM start finds it ended and runs nothing again
    again = recover(store, lambda t: Recorder(log))
    assert again.status(TASK_ID)["taskResult"] == result
    assert journal(log)[done:] == redone


def test_power_loss_before_the_first_record_drops_a_task_that_changed_nothing(tmp_path):
    log = tmp_path / "journal"
    store = master_store(tmp_path / "sd")
    run_until_crash(store, PLAN, lambda t: Recorder(log), crash_before("do", 0))
    store.record_path(TASK_ID).write_bytes(b"")  # block 0 was never synced: lost
    mgr = recover(store, lambda t: Recorder(log))
    assert not mgr.has(TASK_ID) and os.listdir(store.root) == []
    assert journal(log) == []


def test_a_task_without_a_point_of_no_return_done_but_not_recorded_is_rolled_back(tmp_path):
    log = tmp_path / "journal"
    store = CrashingStore(master_store(tmp_path / "sd").root, crash_at=2)
    run_until_crash(store, [step(0, undo=None), step(1), step(2)], lambda t: Recorder(log))
    assert journal(log) == ["do 0", "do 1", "do 2"]  # success was never reported
    assert on_disk(store) == ("running", 2)
    mgr = recover(store, lambda t: Recorder(log))
    assert journal(log)[3:] == ["undo 2", "undo 1"]
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"


def test_crash_in_a_rollback_and_in_its_recovery_is_recovered_again(tmp_path):
    log = tmp_path / "journal"
    store = master_store(tmp_path / "sd")

    class DiesInUndo(Recorder):
        def undo(self, n: int) -> None:
            super().undo(n)
            if n == 2:
                raise Crash

    run_until_crash(store, [step(1), step(2), step(3, "boom")], lambda t: DiesInUndo(log))
    assert journal(log) == ["do 1", "do 2", "undo 3", "undo 2"]  # died rolling back
    assert on_disk(store) == ("running", 1)
    with pytest.raises(Crash):  # the next SPM dies recovering it too
        recover(store, lambda t: DiesInUndo(log))
    mgr = recover(store, lambda t: Recorder(log))
    assert journal(log)[6:] == ["undo 3", "undo 2", "undo 1"]
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"


def test_a_tampered_record_cannot_call_a_method_outside_step_actions(tmp_path):
    log = tmp_path / "journal"
    store = master_store(tmp_path / "sd")
    run_until_crash(store, [step(1, undo="not_a_step")], lambda t: Recorder(log),
                    crash_before("do"))
    mgr = recover(store, lambda t: Recorder(log))
    assert mgr.status(TASK_ID)["taskResult"] == "cleanFailure"
    assert "SHOULD NEVER RUN" not in journal(log)


class FullStore(TaskStore):
    """The master domain fills up before the end can be recorded (an injected fault)."""

    def record(self, task: tk.Task, state: str) -> None:
        if state in tk.DONE:
            raise TaskMetaDataSaveError(f"cannot persist task {task.id}: no space left")
        super().record(task, state)


def test_an_end_that_cannot_be_recorded_is_never_reported_as_success(tmp_path):
    log = tmp_path / "journal"
    store = FullStore(master_store(tmp_path / "sd").root)
    mgr = TaskManager(store, lambda t: Recorder(log), workers=1)
    task_id = mgr.schedule("testVerb", [step(1)])
    assert mgr.wait(task_id, 30)
    status = mgr.status(task_id)
    assert (status["taskResult"], status["code"]) == ("cleanFailure", 407)
    mgr.shutdown()
    assert TaskStore(store.root).load(task_id).state == "running"
    again = TaskManager(TaskStore(store.root), lambda t: Recorder(log), workers=1)
    again.recover_dumped()  # the next SPM ends it from the record: rolled back
    assert journal(log) == ["do 1", "undo 1"]
    assert again.status(task_id)["taskResult"] == "cleanSuccess"
    again.shutdown()


# -- the volume steps, with real qemu-img -------------------------------------------------

CREATE = ["check_create", "create_volume_files", "mark_parent_internal", "set_legal",
          None]  # None: before the end


@pytest.mark.parametrize("crash", CREATE)
def test_volume_create_killed_anywhere_rolls_back_to_nothing(tmp_path, vols, crash):  # noqa: F811 - the imported fixture
    vols.create(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    steps = vols.create_plan(VolumeSpec(IMG, V2, sc.MiB, sc.COW_FORMAT, sc.SPARSE, parent=V1))
    assert [s.action for s in steps] == CREATE[:-1]
    store = CrashingStore(master_store(tmp_path / "msd").root, crash_at=2 if crash is None
                          else 0)
    run_until_crash(store, steps, lambda t: vols, crash and crash_before(crash))
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"
    assert sorted(os.listdir(vols.domain.image_dir(IMG))) == [V1, V1 + ".lease", V1 + ".meta"]
    md = vols.metadata(IMG, V1)
    assert md.voltype == sc.LEAF_VOL and md.legality == sc.LEGAL_VOL


def test_volume_create_killed_in_a_new_image_leaves_no_image_directory(tmp_path, vols):  # noqa: F811 - the imported fixture
    steps = vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    store = master_store(tmp_path / "msd")
    run_until_crash(store, steps, lambda t: vols, crash_before("set_legal"))
    assert sorted(os.listdir(vols.domain.image_dir(IMG))) == [V1, V1 + ".lease", V1 + ".meta"]
    recover(store, lambda t: vols)
    assert vols.domain.images() == []


# what a kill in the middle of create_volume_files can leave (qemu-img, the .meta and the
# lease are made at once), and what a power loss can leave of it (nothing was synced)
HALF_MADE = {
    "image directory only": [],
    "data only": ["{v}"],
    "meta only": ["{v}.meta"],
    "meta being written": ["{v}.meta.new"],
    "lease only": ["{v}.lease"],
    "data and lease, no meta": ["{v}", "{v}.lease"],
}


@pytest.mark.parametrize("made", HALF_MADE)
def test_volume_files_made_half_way_are_all_undone(tmp_path, vols, made):  # noqa: F811 - the imported fixture
    steps = vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    store = master_store(tmp_path / "msd")
    run_until_crash(store, steps, lambda t: vols, crash_before("create_volume_files"))
    image_dir = vols.domain.image_dir(IMG)
    image_dir.mkdir()
    for name in HALF_MADE[made]:
        (image_dir / name.format(v=V1)).write_bytes(b"half")
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"
    assert vols.domain.images() == []


def test_volume_create_power_loss_before_the_legal_write_is_rolled_back(tmp_path, vols):  # noqa: F811 - the imported fixture
    """The image directory's entry is synced only by the LEGAL write: a power loss before
    it may take the whole new image away; recovery then has nothing left to undo."""
    steps = vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    store = master_store(tmp_path / "msd")
    run_until_crash(store, steps, lambda t: vols, crash_before("set_legal"))
    shutil.rmtree(vols.domain.image_dir(IMG))  # lost with the power
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"
    assert vols.domain.images() == []


@pytest.mark.parametrize("lost", ["everything", "its data"])
def test_volume_create_power_loss_in_the_legal_write_is_rolled_back(tmp_path, vols, lost):  # noqa: F811 - the imported fixture
    """The LEGAL .meta is renamed into place before it is fsync'd: a power loss then may
    leave an empty .meta (or none). The task's end was not recorded: rolled back all the
    same, nothing of the volume left."""
    steps = vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    store = CrashingStore(master_store(tmp_path / "msd").root, crash_at=2)  # at the end
    run_until_crash(store, steps, lambda t: vols)
    meta = vols.meta_path(IMG, V1)
    assert vols.metadata(IMG, V1).legality == sc.LEGAL_VOL
    if lost == "everything":
        meta.unlink()
    else:
        meta.write_bytes(b"")
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"
    assert vols.domain.images() == []


def test_volume_delete_killed_in_removal_is_completed(tmp_path, vols):  # noqa: F811 - the imported fixture
    vols.create(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    vols.create(VolumeSpec(IMG, V2, sc.MiB, sc.COW_FORMAT, sc.SPARSE, parent=V1))
    store = master_store(tmp_path / "msd")
    run_until_crash(store, vols.delete_plan(IMG, V2), lambda t: vols,
                    crash_before("remove_volume"))
    os.unlink(vols.path(IMG, V2))  # the removal had begun: data gone, .meta still there
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "success"
    assert sorted(os.listdir(vols.domain.image_dir(IMG))) == [V1, V1 + ".lease", V1 + ".meta"]
    assert vols.metadata(IMG, V1).voltype == sc.LEAF_VOL


def test_volume_delete_killed_before_its_point_of_no_return_restores_legality(tmp_path, vols):  # noqa: F811 - the imported fixture
    vols.create(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    store = CrashingStore(master_store(tmp_path / "msd").root, crash_at=2)
    run_until_crash(store, vols.delete_plan(IMG, V1), lambda t: vols)
    assert vols.metadata(IMG, V1).legality == sc.ILLEGAL_VOL
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"
    assert vols.metadata(IMG, V1).legality == sc.LEGAL_VOL


def test_volume_steps_make_a_created_volume_durable(tmp_path, vols, monkeypatch):  # noqa: F811 - the imported fixture
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    vols.create(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    image_dir = vols.domain.image_dir(IMG)
    # while qemu-img ran: the new image directory's entry in images/; at the end: the
    # LEGAL .meta (once renamed into place) and the entries of its directory
    assert synced == [str(vols.domain.images_dir), str(image_dir / (V1 + ".meta")),
                      str(image_dir)]


class LeaseFormatter:
    """Stands in for sanlock's lease formatting (its failure cannot be caused in a unit
    test): writes the lease area, or fails as sanlock does when its daemon is down."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.formatted: list[str] = []

    def format_lease(self, name: str, disk) -> None:
        if self.fail:
            raise ClusterLockInitError(f"cannot format lease {name}: sanlock is down")
        with open(disk.path, "r+b") as f:
            f.seek(disk.offset)
            f.write(b"\1" * 4096)
        self.formatted.append(name)


@pytest.mark.parametrize("fail", [False, True])
def test_volume_data_and_lease_are_made_together_and_undone_together(vols, fail):  # noqa: F811 - the imported fixture
    vols.domain.locks = LeaseFormatter(fail)  # type: ignore[assignment]
    spec = VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE)
    if fail:
        with pytest.raises(ClusterLockInitError):
            vols.create(spec)
        assert vols.domain.images() == []  # qemu-img's image removed with the lease
        return
    vols.create(spec)
    assert vols.domain.locks.formatted == [V1]
    assert vols.lease_disk(IMG, V1).path.stat().st_size == sc.VOLUME_LEASE_OFFSET + 4096
    assert vols.metadata(IMG, V1).legality == sc.LEGAL_VOL
