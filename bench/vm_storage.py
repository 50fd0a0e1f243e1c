"""What storage costs VM.create and VM.destroy through a real daemon: a VM with no disk
(baseline), with one prepared qcow2 storage drive (a 2-volume chain, checked by qemu-img at
each prepare), with the drive plus a VM lease acquired on the real sanlock daemon, and with
the drive exclusive (its volume lease acquired, by a lease keeper of its own).

One ``vdsmd --dev`` host (libvirt's test driver) with its own unprivileged sanlock daemon and
a localfs export under --dir; the three kinds are measured round-robin (the order rotating
each round) so that a noisy machine slows all alike; figures are medians in ms of the
client's round trip. ``*_ratio`` compare with the baseline of the same run.

Usage: .venv/bin/python bench/vm_storage.py [-n 30] [--dir DIR]
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.sanlock_daemon import start_sanlock
from tests.integration.storage_host import StorageHost
from tests.integration.test_storage_tasks_daemon import IMG, NEW, SD, SP, make_pool

V1, V2 = str(uuid.uuid4()), str(uuid.uuid4())


async def setup(host: StorageHost, export: Path) -> None:
    await make_pool(host, export)  # the same pool as the SPM task tests
    await host.ok("StoragePool.spmStart", storagepoolID=SP)
    for vol, parent in ((V1, None), (V2, V1)):
        extra = {"srcVolUUID": parent} if parent else {}
        status = await host.wait_task(await host.ok("Volume.create", volumeID=vol, **NEW,
                                                    **extra))
        assert status["taskResult"] == "success", status


def params(vm_id: str, kind: str) -> dict[str, Any]:
    devices: list[dict[str, Any]] = []
    if kind in ("drive", "leased", "exclusive"):
        devices.append({"type": "disk", "device": "disk", "domainID": SD, "poolID": SP,
                        "imageID": IMG, "volumeID": V2, "format": "cow",
                        "shared": "exclusive" if kind == "exclusive" else "none"})
    if kind == "leased":
        devices.append({"type": "lease", "sd_id": SD, "lease_id": vm_id})
    return {"vmName": f"b-{vm_id[:8]}", "memSize": 64, "devices": devices}


async def run(rounds: int, base: Path) -> dict[str, Any]:
    export = base / "export"
    export.mkdir()
    host = StorageHost(base / "host", start_sanlock(base / "sanlock"), base / "hooks")
    host.write_config()
    try:
        await host.start()
        await setup(host, export)
        lease_vm = str(uuid.uuid4())
        status = await host.wait_task(await host.ok("Lease.create",
                                                    lease={"sd_id": SD, "lease_id": lease_vm}))
        assert status["taskResult"] == "success", status
        kinds = ["none", "drive", "leased", "exclusive"]
        create: dict[str, list[float]] = {k: [] for k in kinds}
        destroy: dict[str, list[float]] = {k: [] for k in kinds}
        for n in range(rounds + 2):  # two warm-up rounds
            for kind in kinds[n % 4:] + kinds[:n % 4]:
                vm_id = lease_vm if kind == "leased" else str(uuid.uuid4())
                t0 = time.perf_counter()
                await host.ok("VM.create", vmID=vm_id, vmParams=params(vm_id, kind))
                t1 = time.perf_counter()
                await host.ok("VM.destroy", vmID=vm_id)
                t2 = time.perf_counter()
                if n >= 2:
                    create[kind].append((t1 - t0) * 1000)
                    destroy[kind].append((t2 - t1) * 1000)
        med = {f"create_{k}_ms": round(statistics.median(v), 2) for k, v in create.items()}
        med.update({f"destroy_{k}_ms": round(statistics.median(v), 2)
                    for k, v in destroy.items()})
        med["create_drive_ratio"] = round(med["create_drive_ms"] / med["create_none_ms"], 2)
        med["create_leased_ratio"] = round(med["create_leased_ms"] / med["create_none_ms"], 2)
        med["create_exclusive_ratio"] = round(med["create_exclusive_ms"] /
                                              med["create_none_ms"], 2)
        med["create_exclusive_vs_drive"] = round(med["create_exclusive_ms"] /
                                                 med["create_drive_ms"], 2)
        med["volume_lease_release_ms"] = round(med["destroy_exclusive_ms"] -
                                               med["destroy_drive_ms"], 2)
        med["lease_acquire_ms"] = round(med["create_leased_ms"] - med["create_drive_ms"], 2)
        med["lease_release_ms"] = round(med["destroy_leased_ms"] - med["destroy_drive_ms"], 2)
        med["rounds"] = rounds
        await host.ok("StoragePool.spmStop", storagepoolID=SP)
        await host.ok("StoragePool.disconnect", storagepoolID=SP, hostID=1)
        return med
    finally:
        await host.close()
        host.sanlock.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="rounds (each creates 4 VMs)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default /var/tmp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vm-storage-bench-", dir=args.dir or "/var/tmp") as d:
        figures = asyncio.run(run(args.n, Path(d)))
    for key, value in figures.items():
        print(f"{key:24} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
