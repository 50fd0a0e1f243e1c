"""Prepared steps: the volatile part of a task's first recorded step started before its
record is durable (storage.tasks preparers), and the volume create's use of it - qemu-img
into an unnamed file of the domain (storage.unnamed), linked into place only by the step.
Real files and qemu-img; crash cases as in test_storage_task_crashes.py."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from types import MappingProxyType

import pytest

from storage import constants as sc
from storage import qemuimg, unnamed
from storage import tasks as tk
from storage.lease_records import free_lease_head
from storage.locks import DomainLocks, Geometry
from storage.sanlock_adapter import Disk
from storage.task_manager import TaskManager
from storage.task_store import TaskStore
from storage.unnamed import UnnamedFile, UnnamedVolume
from storage.volume import Volumes, VolumeSpec
from tests.unit.test_storage_task_crashes import (
    TASK_ID,
    CrashingStore,
    crash_before,
    recover,
    run_until_crash,
)
from tests.unit.test_storage_tasks import master_store
from tests.unit.test_storage_volumes import IMG, V1, V2, vols  # noqa: F401 - fixture
from vdsm_py.errors import NoSpaceLeftOnDomain, StorageError


class Handle:
    def __init__(self, log: list[str], n: int) -> None:
        self.log, self.n = log, n

    def discard(self) -> None:
        self.log.append(f"discard {self.n}")


class Preparing:
    """A step target whose ``do`` has a preparer; ``do`` notes whether it got its handle."""

    STEP_ACTIONS = frozenset({"check", "do", "undo", "boom"})
    STEP_PREPARES = MappingProxyType({"do": "prepare_do", "boom": "prepare_do"})

    def __init__(self, fail_prepare: bool = False) -> None:
        self.log: list[str] = []
        self.fail_prepare = fail_prepare
        self.prepared_in: list[str] = []

    def prepare_do(self, n: int) -> Handle:
        self.prepared_in.append(threading.current_thread().name)
        if self.fail_prepare:
            raise OSError(95, "not here")
        self.log.append(f"prepare {n}")
        return Handle(self.log, n)

    def check(self, n: int) -> None:
        self.log.append(f"check {n}")

    def do(self, n: int) -> None:
        handle = tk.current_step().take_prepared()
        self.log.append(f"do {n} {'prepared' if handle else 'alone'}")

    def boom(self, n: int) -> None:
        raise StorageError("boom")

    def undo(self, n: int) -> None:
        self.log.append(f"undo {n}")


def plan(action: str = "do") -> list[tk.Step]:
    return [tk.Step("p:x", "check", {"n": 0}), tk.Step("p:x", action, {"n": 1}, undo="undo")]


def run_task(tmp_path: Path, target: Preparing, steps: list[tk.Step],
             store: TaskStore | None = None) -> tk.Task:
    store = store or master_store(tmp_path / "sd")
    task = tk.Task(id=TASK_ID, verb="testVerb", steps=steps, state=tk.QUEUED)
    tk.prepare(task, lambda _t: target)  # as the task manager does with an idle worker
    store.create(task)
    tk.run(task, lambda _t: target, store)
    return task


def test_a_prepared_first_recorded_step_takes_its_handle_after_the_record(tmp_path):
    target = Preparing()
    records: list[str] = []

    class Store(TaskStore):
        def record(self, task: tk.Task, state: str) -> None:
            records.append(f"{state} after {target.log}")
            super().record(task, state)

    task = run_task(tmp_path, target, plan(), Store(master_store(tmp_path / "sd").root))
    assert task.state == tk.FINISHED
    # prepared before the task runs, taken by its step after the durable record
    assert records[0] == "running after ['prepare 1', 'check 0']"
    assert target.log == ["prepare 1", "check 0", "do 1 prepared"]


def test_a_task_not_prepared_runs_its_steps_alone(tmp_path):
    target = Preparing()
    store = master_store(tmp_path / "sd")
    task = tk.Task(id=TASK_ID, verb="testVerb", steps=plan(), state=tk.QUEUED)
    store.create(task)
    tk.run(task, lambda _t: target, store)
    assert target.log == ["check 0", "do 1 alone"]


def test_a_prepared_part_its_step_never_takes_is_discarded(tmp_path):
    target = Preparing()
    task = run_task(tmp_path, target, plan("boom"))
    assert task.state == tk.RECOVERED
    assert target.log == ["prepare 1", "check 0", "discard 1", "undo 1"]
    assert task.prepared == {}


def test_a_prepared_part_is_discarded_when_the_record_cannot_be_written(tmp_path):
    target = Preparing()
    store = CrashingStore(master_store(tmp_path / "sd").root, crash_at=1)
    run_until_crash(store, plan(), lambda _t: target, prepared=True)
    assert target.log == ["prepare 1", "check 0", "discard 1"]


def test_a_failing_preparer_leaves_all_the_work_to_its_step(tmp_path):
    target = Preparing(fail_prepare=True)
    task = run_task(tmp_path, target, plan())
    assert task.state == tk.FINISHED
    assert target.log == ["check 0", "do 1 alone"]


def test_schedule_prepares_ahead_only_for_a_task_an_idle_worker_takes(tmp_path):
    target = Preparing()
    gate = threading.Event()

    class Slow(Preparing):
        def check(self, n: int) -> None:
            assert gate.wait(30)

    slow = Slow()
    targets = {"p": target, "s": slow}
    mgr = TaskManager(master_store(tmp_path / "sd"), lambda t: targets[t[0]], workers=1)
    try:
        busy = mgr.schedule("slow", [tk.Step("s:x", "check", {"n": 0})])
        deadline = threading.Event()
        while mgr.get(busy).state == tk.QUEUED and not deadline.wait(0.01):
            pass
        queued = mgr.schedule("testVerb", plan())  # the only worker is busy: no head start
        gate.set()
        assert mgr.wait(queued, 30)
        assert target.prepared_in == [] and target.log[-1] == "do 1 alone"
        while mgr._idle < 1 and not deadline.wait(0.01):  # the worker is back waiting
            pass
        idle = mgr.schedule("testVerb", plan())  # an idle worker: prepared in schedule
        assert mgr.wait(idle, 30)
        assert target.prepared_in == [threading.current_thread().name]
        assert target.log[-1] == "do 1 prepared"
    finally:
        gate.set()
        mgr.shutdown()


# -- the volume create ------------------------------------------------------------------


def test_unnamed_file_is_invisible_until_linked_and_gone_if_closed_unlinked(tmp_path):
    (tmp_path / "sub").mkdir()
    kept = UnnamedFile.open(tmp_path, 0o640)
    dropped = UnnamedFile.open(tmp_path, 0o640)
    assert kept is not None and dropped is not None and kept.fd is not None
    os.write(kept.fd, b"data")
    assert sorted(os.listdir(tmp_path)) == ["sub"]
    dropped.close()
    kept.link(tmp_path / "sub" / "name")
    kept.close()
    assert (tmp_path / "sub" / "name").read_bytes() == b"data"
    assert (tmp_path / "sub" / "name").stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["sub"]


def test_qemu_img_creates_an_image_into_an_open_unnamed_file(tmp_path):
    made = UnnamedFile.open(tmp_path, 0o660)
    assert made is not None and made.fd is not None
    qemuimg.start_create(made.fd, "qcow2", sc.MiB).wait()
    made.link(tmp_path / "img")
    made.close()
    (info,) = qemuimg.info(tmp_path / "img")
    assert (info.format, info.virtual_size) == ("qcow2", sc.MiB)


def test_task_create_links_the_prepared_data_in_place(tmp_path, vols):  # noqa: F811 - the imported fixture
    vols.create(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    steps = vols.create_plan(VolumeSpec(IMG, V2, sc.MiB, sc.COW_FORMAT, sc.SPARSE, parent=V1))
    seen: list[list[str]] = []

    def hook(task: tk.Task, step: tk.Step) -> None:
        if step.action == "create_volume_files":  # prepared, recorded, not yet linked
            assert isinstance(task.prepared.get(1), UnnamedVolume)
            seen.append(sorted(os.listdir(vols.domain.image_dir(IMG))))

    store = master_store(tmp_path / "msd")
    task = tk.Task(id=TASK_ID, verb="createVolume", steps=steps, state=tk.QUEUED)
    tk.prepare(task, lambda _t: vols)
    store.create(task)
    tk.run(task, lambda _t: vols, store, hook)
    assert task.state == tk.FINISHED, task.message
    assert seen == [[V1, V1 + ".lease", V1 + ".meta"]]
    image_dir = vols.domain.image_dir(IMG)
    assert sorted(os.listdir(image_dir)) == sorted(
        [V1, V1 + ".lease", V1 + ".meta", V2, V2 + ".lease", V2 + ".meta"])
    assert sorted(os.listdir(vols.domain.images_dir)) == [IMG]  # nothing else, ever named
    top, base = qemuimg.info(vols.path(IMG, V2), chain=True)
    assert top.backing_filename == V1 and base.filename.endswith(V1)
    assert (image_dir / V2).stat().st_mode & 0o777 == sc.FILE_VOLUME_PERMISSIONS
    assert vols.metadata(IMG, V2).legality == sc.LEGAL_VOL


class DaemonLocks(DomainLocks):
    """A domain's locks whose daemon side (the named way of formatting a lease) is noted,
    not done: no sanlock daemon at unit level. The leases written ahead are real."""

    def __init__(self, volumes: Volumes, geometry: Geometry | None = None) -> None:
        dom = volumes.domain
        super().__init__(None, dom.sd_uuid, dom.md_dir,  # type: ignore[arg-type]
                         geometry or Geometry())
        self.by_daemon: list[str] = []

    def format_lease(self, name: str, disk: Disk) -> None:
        self.by_daemon.append(name)


def run_prepared(tmp_path: Path, volumes: Volumes, steps: list[tk.Step]) -> tk.Task:
    store = master_store(tmp_path / "msd")
    task = tk.Task(id=TASK_ID, verb="createVolume", steps=steps, state=tk.QUEUED)
    tk.prepare(task, lambda _t: volumes)
    store.create(task)
    tk.run(task, lambda _t: volumes, store)
    assert task.state == tk.FINISHED, task.message
    return task


def test_task_create_writes_its_lease_free_into_an_unnamed_file_ahead(tmp_path, vols):  # noqa: F811 - the imported fixture
    locks = vols.domain.locks = DaemonLocks(vols)
    run_prepared(tmp_path, vols, vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT,
                                                             sc.SPARSE)))
    lease = vols.lease_disk(IMG, V1).path.read_bytes()
    head = free_lease_head(vols.domain.sd_uuid, V1, sector=512, align=sc.MiB)
    assert lease == head + bytes(sc.MiB - len(head))
    assert locks.by_daemon == []
    assert vols.lease_disk(IMG, V1).path.stat().st_mode & 0o777 == sc.FILE_VOLUME_PERMISSIONS


def test_a_lease_geometry_not_written_here_is_left_to_sanlock(tmp_path, vols):  # noqa: F811 - the imported fixture
    locks = vols.domain.locks = DaemonLocks(vols, Geometry(2 * sc.MiB, 512))  # none of sanlock's
    run_prepared(tmp_path, vols, vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT,
                                                             sc.SPARSE)))
    assert locks.by_daemon == [V1]
    assert vols.lease_disk(IMG, V1).path.stat().st_size == 0  # made named, for the daemon


@pytest.mark.parametrize("lease", [False, True])
@pytest.mark.parametrize("crash", ["at the record", "after the record"])
def test_volume_create_killed_while_qemu_img_writes_unnamed_leaves_nothing(tmp_path, vols,  # noqa: F811 - the imported fixture
                                                                            crash, lease):
    """qemu-img (prepared) writes into an unnamed file while the record syncs, the lease is
    written into another: a kill before the step links them leaves no name anywhere,
    whatever the record shows."""
    if lease:
        vols.domain.locks = DaemonLocks(vols)
    steps = vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    if crash == "at the record":
        store = CrashingStore(master_store(tmp_path / "msd").root, crash_at=1, torn=5)
        task = run_until_crash(store, steps, lambda t: vols, prepared=True)
    else:
        store = master_store(tmp_path / "msd")
        task = run_until_crash(store, steps, lambda t: vols,
                               crash_before("create_volume_files"), prepared=True)
    assert task.prepared == {}  # discarded: qemu-img stopped, the file closed (as a kill does)
    assert os.listdir(vols.domain.images_dir) == []
    mgr = recover(store, lambda t: vols)
    assert mgr.status(TASK_ID)["taskResult"] == "cleanSuccess"
    assert os.listdir(vols.domain.images_dir) == []


def test_task_create_out_of_space_in_the_unnamed_file_is_397_and_leaves_nothing(tmp_path,
                                                                                vols):  # noqa: F811 - the imported fixture
    st = os.statvfs(vols.domain.root)
    too_big = (st.f_bavail * st.f_frsize // sc.MiB + 1024) * sc.MiB
    steps = vols.create_plan(VolumeSpec(IMG, V1, too_big, sc.RAW_FORMAT, sc.PREALLOCATED))
    store = master_store(tmp_path / "msd")
    task = tk.Task(id=TASK_ID, verb="createVolume", steps=steps, state=tk.QUEUED)
    tk.prepare(task, lambda _t: vols)
    store.create(task)
    tk.run(task, lambda _t: vols, store)
    assert task.state == tk.RECOVERED and isinstance(task.error, NoSpaceLeftOnDomain)
    assert task.code == 397
    assert os.listdir(vols.domain.images_dir) == []


def test_where_unnamed_files_are_refused_the_step_makes_the_data_named(tmp_path, vols,  # noqa: F811 - the imported fixture
                                                                        monkeypatch):
    """NFS refuses O_TMPFILE (EOPNOTSUPP); no NFS server here, so the refusal is injected."""
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kw):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(unnamed.os, "open", no_tmpfile)
    steps = vols.create_plan(VolumeSpec(IMG, V1, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    store = master_store(tmp_path / "msd")
    task = tk.Task(id=TASK_ID, verb="createVolume", steps=steps, state=tk.QUEUED)
    tk.prepare(task, lambda _t: vols)
    store.create(task)
    prepared: list[bool] = []
    tk.run(task, lambda _t: vols, store, lambda t, s: prepared.append(bool(t.prepared)))
    assert task.state == tk.FINISHED, task.message
    assert prepared == [False] * len(steps)  # before each step: nothing prepared
    assert sorted(os.listdir(vols.domain.image_dir(IMG))) == [V1, V1 + ".lease", V1 + ".meta"]
