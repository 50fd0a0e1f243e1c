"""What the SPM task layer costs on Volume.create: a persisted task (record on the master
domain, run by a task worker) against the same steps run inline and against a bare
``qemu-img create`` of the same image. In-process, real files and qemu-img; with
``--sanlock`` each volume's lease is formatted by a private sanlock daemon, as the SPM does.

The three are measured round-robin (the order rotating each round), so that a noisy
machine slows all three alike; figures are medians. ``*_fsyncs`` count this process's
fsync/fdatasync calls per create (qemu-img's own, 4 per image, come on top of every
figure including the bare one). ``task_parts_ms`` splits a task create (medians): each
step, and the record writes (``record``: plan at schedule, then the durable appends).

Usage: .venv/bin/python bench/storage_tasks.py [-n 100] [--dir DIR] [--sanlock]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import constants as sc
from storage import tasks as tk
from storage.domain import DomainSpec, FileStorageDomain
from storage.locks import DomainLocks, Geometry
from storage.sanlock_adapter import Sanlock
from storage.task_manager import TaskManager
from storage.task_store import TaskStore
from storage.volume import Volumes, VolumeSpec

SIZE = 1 << 30


class SyncCounter:
    """Counts os.fsync/os.fdatasync calls of this process (any thread)."""

    def __init__(self) -> None:
        self.calls = 0
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            setattr(os, name, self._counting(real))

    def _counting(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            self.calls += 1
            real(fd)
        return call


class PartTimer:
    """Times each step method and the task record writes, per create."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.parts: dict[str, list[float]] = {}
        real_call = tk.call

        def call(resolve: tk.Resolver, target: str, method: str,
                 args: Mapping[str, Any]) -> Any:
            return self._timed(method, real_call, resolve, target, method, args)
        tk.call = call
        for name in ("create", "record"):
            real = getattr(TaskStore, name)
            setattr(TaskStore, name, self._wrap(real))

    def _wrap(self, real: Callable[..., None]) -> Callable[..., None]:
        def method(store: TaskStore, *args: object) -> None:
            self._timed("record", real, store, *args)
        return method

    def _timed(self, part: str, fn: Callable[..., object], *args: object) -> object:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.current[part] = self.current.get(part, 0.0) + time.perf_counter() - t0

    def take(self, keep: bool) -> None:
        if keep:
            for part, spent in self.current.items():
                self.parts.setdefault(part, []).append(spent)
        self.current = {}

    def medians(self) -> dict[str, float]:
        return {part: median_ms(spent) for part, spent in self.parts.items()}


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def new_spec() -> VolumeSpec:
    return VolumeSpec(str(uuid.uuid4()), str(uuid.uuid4()), SIZE, sc.COW_FORMAT, sc.SPARSE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="where (default: a temp dir)")
    parser.add_argument("--sanlock", action="store_true", help="format volume leases")
    args = parser.parse_args()
    syncs = SyncCounter()
    parts = PartTimer()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        mnt = Path(tmp)
        sd = str(uuid.uuid4())
        daemon = None
        factory = None
        if args.sanlock:
            from tests.integration.sanlock_daemon import start_sanlock
            daemon = start_sanlock(mnt / "sanlock")
            os.environ.update(SANLOCK_RUN_DIR=str(daemon.run_dir), SANLOCK_PRIVILEGED="0")
            sanlock = Sanlock(daemon.run_dir)

            def factory(sd_uuid: str, md_dir: Path, geo: Geometry) -> DomainLocks:
                return DomainLocks(sanlock, sd_uuid, md_dir, geo)
        dom = FileStorageDomain.create(mnt, DomainSpec(sd, "bench", sc.LOCALFS_DOMAIN, tmp),
                                       io_timeout=1, locks_factory=factory)
        vols = Volumes(dom)
        mgr = TaskManager(TaskStore.of_master(dom.root), lambda target: vols, workers=1)
        raw_dir = mnt / "bare"
        raw_dir.mkdir()

        def bare() -> None:
            subprocess.run(["qemu-img", "create", "-f", "qcow2", "-o", "compat=1.1",
                            str(raw_dir / str(uuid.uuid4())), str(SIZE)], check=True,
                           capture_output=True)

        def inline() -> None:
            vols.create(new_spec())

        def task() -> None:
            task_id = mgr.schedule("createVolume", vols.create_plan(new_spec()))
            mgr.wait(task_id, 60)
            if mgr.status(task_id)["taskResult"] != "success":
                raise RuntimeError(f"create failed: {mgr.status(task_id)}")

        kinds = {"qemu_img_create": bare, "volume_create_inline": inline,
                 "volume_create_task": task}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        fsyncs: dict[str, list[int]] = {k: [] for k in kinds}
        names = list(kinds)
        for i in range(args.n + 1):  # round 0 warms up
            for name in names[i % 3:] + names[:i % 3]:
                before = syncs.calls
                t0 = time.perf_counter()
                kinds[name]()
                if i:
                    times[name].append(time.perf_counter() - t0)
                    fsyncs[name].append(syncs.calls - before)
                parts.take(keep=bool(i) and name == "volume_create_task")
        mgr.shutdown()
        if daemon is not None:
            daemon.stop()
    figures: dict[str, float] = {"n": args.n, "sanlock": int(args.sanlock)}
    for name in names:
        figures[f"{name}_ms"] = median_ms(times[name])
    figures["task_over_inline_ratio"] = round(
        figures["volume_create_task_ms"] / figures["volume_create_inline_ms"], 2)
    figures["task_over_qemu_img_ratio"] = round(
        figures["volume_create_task_ms"] / figures["qemu_img_create_ms"], 2)
    figures["inline_fsyncs"] = statistics.median(fsyncs["volume_create_inline"])
    figures["task_fsyncs"] = statistics.median(fsyncs["volume_create_task"])
    for key, value in figures.items():
        print(f"{key:28} {value}")
    figures["task_parts_ms"] = parts.medians()  # type: ignore[assignment]
    for key, value in figures["task_parts_ms"].items():  # type: ignore[attr-defined]
        print(f"  {key:26} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
