"""SPM task machinery: steps and their undos, persistence in VDSM's layout, recovery after an
interruption (see test_storage_task_crashes.py), on a real directory. Step targets are a
small recorder class."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from storage import tasks as tk
from storage.task_manager import TaskManager
from storage.task_store import TaskStore, block, parse_blocks
from vdsm_py.errors import ActionStopped, StorageError, TaskClearError, UnknownTask


class Recorder:
    """A step target writing what it did into a journal file (survives a 'restart')."""

    STEP_ACTIONS = frozenset({"do", "undo", "boom", "wait", "undo_boom"})

    def __init__(self, journal: Path, gate: threading.Event | None = None):
        self.journal = journal
        self.gate = gate
        self.entered = threading.Event()

    def _note(self, text: str) -> None:
        with open(self.journal, "a") as f:
            f.write(text + "\n")

    def do(self, n: int) -> None:
        self._note(f"do {n}")

    def undo(self, n: int) -> None:
        self._note(f"undo {n}")

    def boom(self, n: int) -> None:
        raise StorageError(f"step {n} broke")

    def undo_boom(self, n: int) -> None:
        raise OSError(5, "undo broke")

    def wait(self, n: int) -> None:
        self.entered.set()
        assert self.gate is not None and self.gate.wait(30)
        tk.current_step().check_stopped()
        self._note(f"do {n}")

    def not_a_step(self, n: int) -> None:
        self._note("SHOULD NEVER RUN")


def master_store(domain_root: Path) -> TaskStore:
    domain_root.mkdir()
    return TaskStore.of_master(domain_root)


def journal(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def step(n: int, action: str = "do", undo: str | None = "undo", forward: bool = False):
    return tk.Step("rec:x", action, {"n": n}, undo=undo, forward=forward)


@pytest.fixture
def env(tmp_path):
    log = tmp_path / "journal"
    gate = threading.Event()
    store = master_store(tmp_path / "sd")
    target = Recorder(log, gate)
    mgr = TaskManager(store, lambda t: target, workers=2)
    mgr.target = target  # type: ignore[attr-defined]
    yield mgr, store, log, gate
    gate.set()
    mgr.shutdown()


def run_to_end(mgr: TaskManager, steps, resources=()) -> dict:
    task_id = mgr.schedule("testVerb", steps, resources)
    assert mgr.wait(task_id, 30)
    return mgr.status(task_id)


def test_steps_run_in_order_and_the_task_reports_vdsm_status(env):
    mgr, _, log, _ = env
    status = run_to_end(mgr, [step(1), step(2, undo=None), step(3)])
    assert journal(log) == ["do 1", "do 2", "do 3"]
    assert status["taskState"] == "finished" and status["taskResult"] == "success"
    assert status["code"] == 0 and status["message"] == "3 jobs completed successfully"
    assert mgr.info(status["taskID"]) == {"id": status["taskID"], "verb": "testVerb"}


def test_a_task_end_is_announced_once_with_its_final_status(tmp_path):
    ended: list[dict] = []
    log = tmp_path / "journal"
    mgr = TaskManager(master_store(tmp_path / "sd"), lambda t: Recorder(log), workers=1,
                      on_done=lambda task: ended.append(task.status()))
    try:
        ok = run_to_end(mgr, [step(1)])
        failed = run_to_end(mgr, [step(2), step(3, "boom")])
        deadline = time.monotonic() + 30  # announced right after the end is reported
        while len(ended) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        mgr.shutdown()
    assert ended == [ok, failed] and failed["taskResult"] == "cleanSuccess"


def test_a_failing_end_listener_does_not_stop_the_worker(tmp_path):
    def listener(task: tk.Task) -> None:
        raise RuntimeError("listener broke")

    mgr = TaskManager(master_store(tmp_path / "sd"), lambda t: Recorder(tmp_path / "j"),
                      workers=1, on_done=listener)
    try:
        assert run_to_end(mgr, [step(1)])["taskResult"] == "success"
        assert run_to_end(mgr, [step(2)])["taskResult"] == "success"  # same worker
    finally:
        mgr.shutdown()


def test_failed_step_undoes_begun_steps_last_first(env):
    mgr, _, log, _ = env
    status = run_to_end(mgr, [step(1), step(2), step(3, "boom", undo="undo"), step(4)])
    # step 3's undo runs too: it may have touched storage before failing
    assert journal(log) == ["do 1", "do 2", "undo 3", "undo 2", "undo 1"]
    assert status["taskResult"] == "cleanSuccess" and status["taskState"] == "finished"
    assert status["code"] == StorageError.code and "step 3 broke" in status["message"]


def test_failing_undo_ends_the_task_in_clean_failure_after_trying_the_others(env):
    mgr, _, log, _ = env
    status = run_to_end(mgr, [step(1), step(2, undo="undo_boom"), step(3, "boom", undo=None)])
    assert journal(log) == ["do 1", "do 2", "undo 1"]  # step 1's undo ran despite step 2's
    assert status["taskResult"] == "cleanFailure" and "rollback failed" in status["message"]


def test_failure_past_the_point_of_no_return_is_not_undone(env):
    mgr, _, log, _ = env
    status = run_to_end(mgr, [step(1), step(2, undo=None, forward=True), step(3, "boom")])
    assert journal(log) == ["do 1", "do 2"]
    assert status["taskResult"] == "cleanFailure" and "step 3 broke" in status["message"]


def test_stop_rolls_back_after_the_current_step(env):
    mgr, _, log, gate = env
    task_id = mgr.schedule("testVerb", [step(1), step(2, "wait"), step(3)])
    assert mgr.target.entered.wait(30)  # step 2 is running
    assert mgr.status(task_id)["taskState"] == "running"
    mgr.stop(task_id)
    gate.set()  # step 2 notices the stop (check_stopped) and fails
    assert mgr.wait(task_id, 30)
    status = mgr.status(task_id)
    assert status["taskResult"] == "cleanSuccess" and status["code"] == ActionStopped.code
    assert journal(log) == ["do 1", "undo 2", "undo 1"]


def test_task_record_follows_vdsm_layout_and_clear_removes_it(env):
    mgr, store, _, _ = env
    status = run_to_end(mgr, [step(1), step(2, undo=None), step(3, forward=True)])
    task_id = status["taskID"]
    assert store.root.parent.name == "master" and store.root.name == "tasks"
    assert os.listdir(store.root / task_id) == [f"{task_id}.task"]
    text = (store.root / task_id / f"{task_id}.task").read_text()
    # the plan (queued), then only: before step 0 (first undo), before step 2 (point of no
    # return), the end
    assert text.count("\ncommit = ") == 4
    assert [line for line in text.splitlines() if line.startswith("state = ")] == \
        ["state = queued", "state = running", "state = running", "state = finished"]
    assert [line for line in text.splitlines() if line.startswith("begun = ")] == \
        ["begun = 0", "begun = 1", "begun = 3", "begun = 3"]
    assert f"id = {task_id}\n" in text and "name = testVerb\n" in text
    job = json.loads(text.split("job2 = ")[1].splitlines()[0])
    assert job == {"target": "rec:x", "runcmd": "do", "undo": "undo", "forward": 1,
                   "params": {"n": 3}}
    loaded = store.load(task_id)
    assert loaded.state == tk.FINISHED and loaded.steps[2].forward and loaded.begun == 3
    with pytest.raises(TaskClearError):
        mgr.clear(mgr.schedule("testVerb", [step(9, "wait")]))
    mgr.clear(task_id)
    assert not (store.root / task_id).exists()
    with pytest.raises(UnknownTask):
        mgr.status(task_id)


def test_a_task_with_nothing_to_undo_writes_only_its_plan_and_its_end(env):
    mgr, store, _, _ = env
    task_id = run_to_end(mgr, [step(1, undo=None), step(2, undo=None)])["taskID"]
    text = (store.root / task_id / f"{task_id}.task").read_text()
    assert text.count("\ncommit = ") == 2 and "state = finished\n" in text


def test_unwritten_and_half_removed_task_directories_are_discarded(tmp_path):
    store = master_store(tmp_path / "sd")
    (store.root / "6f1f0c52-2222-4a1e-8a53-0d1f2c3b4a5d.temp").mkdir()
    (store.root / "6f1f0c52-3333-4a1e-8a53-0d1f2c3b4a5d.backup").mkdir()
    never_synced = store.root / "6f1f0c52-4444-4a1e-8a53-0d1f2c3b4a5d"
    never_synced.mkdir()  # its plan was lost in a power cut: it never touched storage
    (never_synced / f"{never_synced.name}.task").write_text("id = 6f1f0c52-44")
    empty = store.root / "6f1f0c52-5555-4a1e-8a53-0d1f2c3b4a5d"
    empty.mkdir()
    damaged = store.root / "6f1f0c52-6666-4a1e-8a53-0d1f2c3b4a5d"
    damaged.mkdir()  # an intact record that makes no sense: not ours to judge
    (damaged / f"{damaged.name}.task").write_bytes(block({"id": "nonsense", "state": "x"}))
    assert store.load_all() == []
    assert sorted(os.listdir(store.root)) == [damaged.name]


def test_record_blocks_after_a_torn_or_damaged_one_are_ignored():
    first = block({"id": "a", "state": "queued", "begun": 0})
    second = block({"state": "running", "begun": 2})
    third = block({"state": "finished"})
    assert parse_blocks(first + second + third)["state"] == "finished"
    assert parse_blocks(first + second + third[:-3]) == {"id": "a", "state": "running",
                                                         "begun": "2"}
    damaged = second.replace(b"begun = 2", b"begun = 5")
    assert parse_blocks(first + damaged + third)["state"] == "queued"
    assert parse_blocks(first[:-1]) is None and parse_blocks(b"") is None


def test_tasks_sharing_a_resource_never_run_at_once(env):
    mgr, _, log, gate = env
    first = mgr.schedule("testVerb", [step(1, "wait")], ["sd/img"])
    second = mgr.schedule("testVerb", [step(2)], ["sd/img"])
    assert not mgr.wait(second, 0.5)  # held behind the first (two workers are free)
    gate.set()
    assert mgr.wait(first, 30) and mgr.wait(second, 30)
    assert journal(log) == ["do 1", "do 2"]
