"""Storage benchmark: volumes, snapshot chains and repository stats on a real ``vdsmd --dev``
with its own sanlock daemon and a local export directory as the storage server.

Figures (the last line printed is one JSON object):

- ``host_id_acquire_s``: ``StoragePool.connect`` sent → the master domain's host id shown
  acquired by ``Host.getStorageRepoStats`` (sanlock's join, with ``sanlock_io_timeout`` 1 s);
- ``repostats_ms_20_domains`` (p50, and p99): closed-loop ``Host.getStorageRepoStats``
  round trips over mutual TLS + STOMP with 20 active, monitored domains (target ≤ 5 ms);
- ``volume_create_ms``: one sparse qcow2 ``Volume.create`` (an SPM task: call sent → the
  client knows the volume is ready, from the task's ``|storage|task_status|<taskID>`` event;
  with ``--poll``, from polling ``Task.getStatus`` every 1 ms: ``task_end_by`` says which),
  mean over ``--volumes`` volumes each in its own image, one at a time;
  ``volumes_per_s_concurrent``: the same number sent at once, until all finished;
- ``qemu_img_create_ms``: a bare ``qemu-img create`` of the same image in this process, run
  alternately with the daemon's creates (the machine is shared: both see the same load);
  ``create_overhead_ratio`` = ``volume_create_ms`` / ``qemu_img_create_ms`` (target ≤ 1.5);
- ``snapshot_create_ms``: mean ``Volume.create`` of a layer in a ``--depth``-deep chain;
  ``prepare_deep_chain_ms``: ``Image.prepare`` of its leaf (whole chain checked);
- ``lease_acquire_ms`` / ``lease_release_ms``: sanlock's own latency for a volume lease,
  measured in this process on a domain of the same export (p50).

    .venv/bin/python bench/storage.py [--volumes 500] [--depth 50] [--calls 500] [--poll]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from storage import constants as sc
from storage.domain import DomainSpec, FileStorageDomain
from storage.locks import DomainLocks, Geometry
from storage.sanlock_adapter import Sanlock
from storage.service import TASK_STATUS_EVENT
from storage.volume import Volumes, VolumeSpec
from tests.integration.sanlock_daemon import start_sanlock
from tests.integration.storage_host import BLANK, StorageHost

DOMAINS = 20
SIZE = str(1 << 30)


def new_id() -> str:
    return str(uuid.uuid4())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class TaskEnds:
    """The ``|storage|task_status|<taskID>`` events of one client, kept by task id (an event
    may come before the answer that names its task), so a task's end is known without
    polling ``Task.getStatus``; ``poll=True`` polls instead (every 1 ms), for comparison."""

    def __init__(self, poll: bool = False) -> None:
        self.poll = poll
        self.ended: dict[str, dict] = {}
        self.waiters: dict[str, asyncio.Future] = {}
        self.reader: asyncio.Task | None = None

    async def start(self, host: StorageHost) -> None:
        assert host.client is not None
        stream = await host.client.subscribe_events(confirm=True)
        self.reader = asyncio.create_task(self._read(stream))

    async def _read(self, stream) -> None:
        async for method, params in stream:
            if not method.startswith(TASK_STATUS_EVENT):
                continue
            task_id = method[len(TASK_STATUS_EVENT):]
            self.ended[task_id] = params[task_id]
            waiter = self.waiters.pop(task_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(params[task_id])

    async def wait(self, host: StorageHost, task_id: str) -> dict:
        if self.poll:
            while (status := await host.ok("Task.getStatus", taskID=task_id))["taskState"] \
                    != "finished":
                await asyncio.sleep(0.001)
            return status
        if task_id not in self.ended:
            waiter = self.waiters[task_id] = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), 60)
            except TimeoutError:  # no event (should not happen): ask
                self.waiters.pop(task_id, None)
                return await host.wait_task(task_id)
        return self.ended.pop(task_id)


ENDS = TaskEnds()


async def run_task(host: StorageHost, method: str, **params) -> float:
    """Send a task verb and wait until the client knows it finished (its end event, or
    polling with ``--poll``); seconds taken. Clears the task."""
    start = time.perf_counter()
    task_id = await host.ok(method, **params)
    status = await ENDS.wait(host, task_id)
    elapsed = time.perf_counter() - start
    if status["taskResult"] != "success":
        raise RuntimeError(f"{method} failed: {status}")
    await host.ok("Task.clear", taskID=task_id)
    return elapsed


async def setup_pool(host: StorageHost, export: Path, sp: str) -> tuple[list[str], float]:
    conn = [{"id": "c1", "connection": str(export)}]
    await host.ok("StoragePool.connectStorageServer", storagepoolID=BLANK, domainType=4,
                  connectionParams=conn)
    domains = [new_id() for _ in range(DOMAINS)]
    for sd in domains:
        await host.ok("StorageDomain.create", storagedomainID=sd, domainType=4,
                      typeArgs=str(export), name="bench")
    await host.ok("StoragePool.create", storagepoolID=sp, name="bench", masterSdUUID=domains[0],
                  masterVersion=1, domainList=domains)
    start = time.perf_counter()
    await host.ok("StoragePool.connect", storagepoolID=sp, hostID=1, masterSdUUID=domains[0],
                  masterVersion=1)
    while not (await host.ok("Host.getStorageRepoStats")).get(domains[0], {}).get("acquired"):
        await asyncio.sleep(0.02)
    acquired = time.perf_counter() - start
    await host.ok("StoragePool.spmStart", storagepoolID=sp)
    return domains, acquired


async def repo_stats(host: StorageHost, calls: int) -> list[float]:
    stats = await host.ok("Host.getStorageRepoStats")
    if len(stats) != DOMAINS or not all(s["valid"] for s in stats.values()):
        raise RuntimeError(f"expected {DOMAINS} valid domains: {stats}")
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await host.ok("Host.getStorageRepoStats")
        times.append((time.perf_counter() - start) * 1000)
    return times


def bare_qemu_img_create(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-o", "compat=1.1", str(path), SIZE],
                   check=True, capture_output=True)
    return time.perf_counter() - start


async def volume_creates(host: StorageHost, sp: str, sd: str, n: int,
                         bare_dir: Path) -> tuple[float, float]:
    """Mean ms of ``Volume.create`` and of a bare ``qemu-img create``, interleaved one for
    one so that both see the same load of this shared machine."""
    bare_dir.mkdir(exist_ok=True)
    times, bare = [], []
    for i in range(n):
        times.append(await run_task(host, "Volume.create", volumeID=new_id(), storagepoolID=sp,
                                    storagedomainID=sd, imageID=new_id(), size=SIZE,
                                    volFormat=4, preallocate=2))
        bare.append(await asyncio.to_thread(bare_qemu_img_create, bare_dir / str(i)))
    shutil.rmtree(bare_dir)
    return statistics.mean(times) * 1000, statistics.mean(bare) * 1000


async def concurrent_creates(host: StorageHost, sp: str, sd: str, n: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(run_task(host, "Volume.create", volumeID=new_id(), storagepoolID=sp,
                                    storagedomainID=sd, imageID=new_id(), size=SIZE,
                                    volFormat=4, preallocate=2) for _ in range(n)))
    return n / (time.perf_counter() - start)


async def snapshot_chain(host: StorageHost, sp: str, sd: str, depth: int) -> tuple[float, float]:
    img = new_id()
    ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img}
    parent = new_id()
    await run_task(host, "Volume.create", volumeID=parent, size=SIZE, volFormat=4,
                   preallocate=2, **ids)
    times = []
    for _ in range(depth - 1):
        vol = new_id()
        times.append(await run_task(host, "Volume.create", volumeID=vol, size=SIZE,
                                    volFormat=4, preallocate=2, srcVolUUID=parent, **ids))
        parent = vol
    start = time.perf_counter()
    prepared = await host.ok("Image.prepare", volumeID=parent, **ids)
    prepare_ms = (time.perf_counter() - start) * 1000
    if len(prepared["imgVolumesInfo"]) != depth:
        raise RuntimeError(f"chain of {len(prepared['imgVolumesInfo'])} volumes, not {depth}")
    await host.ok("Image.teardown", **ids)
    return statistics.mean(times) * 1000, prepare_ms


def lease_latency(export: Path, sanlock_run_dir: Path, rounds: int) -> tuple[float, float, float]:
    """Join a lockspace of our own (host id 1) and take/free a volume lease ``rounds`` times."""
    os.environ["SANLOCK_RUN_DIR"] = str(sanlock_run_dir)  # read by libsanlock in this process
    os.environ["SANLOCK_PRIVILEGED"] = "0"
    sanlock = Sanlock(sanlock_run_dir)
    sd = new_id()

    def factory(sd_uuid: str, md_dir: Path, geo: Geometry) -> DomainLocks:
        return DomainLocks(sanlock, sd_uuid, md_dir, geo)

    dom = FileStorageDomain.create(export, DomainSpec(sd, "lease", sc.LOCALFS_DOMAIN,
                                                      str(export)),
                                   io_timeout=1, locks_factory=factory)
    locks = dom.locks
    assert locks is not None
    img, vol = new_id(), new_id()
    Volumes(dom).create(VolumeSpec(img, vol, 1 << 20, sc.RAW_FORMAT, sc.SPARSE))
    start = time.perf_counter()
    locks.acquire_host_id(1, wait=True)
    join = time.perf_counter() - start
    disk = Volumes(dom).lease_disk(img, vol)
    acquire, release = [], []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            locks.acquire(vol, disk)
            t1 = time.perf_counter()
            locks.release(vol, disk)
            t2 = time.perf_counter()
            acquire.append((t1 - t0) * 1000)
            release.append((t2 - t1) * 1000)
    finally:
        locks.release_host_id(1, wait=True)
    return join, statistics.median(acquire), statistics.median(release)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=500)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--poll", action="store_true",
                    help="learn a task's end by polling Task.getStatus, not from its event")
    args = ap.parse_args()
    ENDS.poll = args.poll
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    export = work / "export"
    export.mkdir()
    sanlock = start_sanlock(work / "sanlock")
    host = StorageHost(work / "host", sanlock, work / "hooks")
    sp = new_id()
    try:
        await host.start()
        await ENDS.start(host)
        domains, acquired = await setup_pool(host, export, sp)
        print(f"host id acquired {acquired:.2f} s after StoragePool.connect "
              f"({DOMAINS} domains, sanlock io timeout 1 s)", flush=True)
        stats = await repo_stats(host, args.calls)
        print(f"getStorageRepoStats x{args.calls}, {DOMAINS} domains: p50 "
              f"{statistics.median(stats):.2f} ms p99 {pct(stats, 0.99):.2f} ms", flush=True)
        sd = domains[0]
        await volume_creates(host, sp, sd, 5, work / "bare")  # warm-up
        create, bare = await volume_creates(host, sp, sd, args.volumes, work / "bare")
        ratio = create / bare
        print(f"Volume.create x{args.volumes} one at a time: {create:.1f} ms each vs bare "
              f"qemu-img create {bare:.1f} ms: ratio {ratio:.2f}", flush=True)
        rate = await concurrent_creates(host, sp, sd, args.volumes)
        print(f"Volume.create x{args.volumes} at once: {rate:.0f} volumes/s", flush=True)
        layer, prepare = await snapshot_chain(host, sp, sd, args.depth)
        print(f"{args.depth}-deep chain: {layer:.1f} ms per layer, Image.prepare of the leaf "
              f"{prepare:.1f} ms", flush=True)
        await host.ok("StoragePool.spmStop", storagepoolID=sp)
        await host.ok("StoragePool.disconnect", storagepoolID=sp, hostID=1)
    finally:
        await host.close()
    join, acq, rel = await asyncio.to_thread(lease_latency, export, sanlock.run_dir, 200)
    sanlock.stop()
    print(f"sanlock (in this process): host id join {join:.2f} s, volume lease acquire "
          f"{acq:.2f} ms, release {rel:.2f} ms (p50)", flush=True)
    result = {
        "volumes": args.volumes,
        "task_end_by": "polling" if args.poll else "event",
        "volume_create_ms": round(create, 2),
        "qemu_img_create_ms": round(bare, 2),
        "create_overhead_ratio": round(ratio, 2),
        "volumes_per_s_concurrent": round(rate, 1),
        "snapshot_depth": args.depth,
        "snapshot_create_ms": round(layer, 2),
        "prepare_deep_chain_ms": round(prepare, 2),
        "repostats_ms_20_domains": round(statistics.median(stats), 3),
        "repostats_p99_ms_20_domains": round(pct(stats, 0.99), 3),
        "host_id_acquire_s": round(acquired, 2),
        "sanlock_join_s": round(join, 2),
        "lease_acquire_ms": round(acq, 2),
        "lease_release_ms": round(rel, 2),
    }
    print(json.dumps(result), flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
