"""The real sanlock daemon: lockspace per domain, host ids, exclusive leases.

Two "hosts" are two sanlock daemons (own run directories) sharing one domain directory:
host 1 is this test process, host 2 a child process talking to the second daemon. io
timeout 1 s, so joining a lockspace takes about 3 s.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import constants as sc
from storage import lease_records
from storage import tasks as tk
from storage.domain import DomainSpec, FileStorageDomain
from storage.locks import DomainLocks, Geometry
from storage.sanlock_adapter import Disk, HostIdState, Sanlock
from storage.task_store import TaskStore
from storage.unnamed import UnnamedFile, UnnamedVolume
from storage.volume import Volumes, VolumeSpec
from tests.integration.sanlock_daemon import SanlockDaemon, shared_sanlock, start_sanlock
from vdsm_py.errors import AcquireLockFailure

SD = "a1b2c3d4-7777-4a1e-8a53-0d1f2c3b4a5d"
IMG = "b2c3d4e5-8888-4b2f-9b64-1e2a3d4c5b6e"
VOL = "c3d4e5f6-9999-4c30-8c75-2f3b4e5d6c7f"
VOL2 = "d4e5f6a7-aaaa-4d41-9d86-304c5f6e7d80"
TASK = "e5f6a7b8-bbbb-4e52-ae97-415d60718e91"
GEO = Geometry(io_timeout=1)


def run_create_task(tmp_path: Path, vols: Volumes, spec: VolumeSpec) -> None:
    """As the SPM runs it: recorded, its first recorded step prepared ahead."""
    (tmp_path / "msd").mkdir()
    store = TaskStore.of_master(tmp_path / "msd")
    task = tk.Task(id=TASK, verb="createVolume", steps=vols.create_plan(spec),
                   state=tk.QUEUED)
    tk.prepare(task, lambda _target: vols)  # as the task manager does with an idle worker
    store.create(task)
    tk.run(task, lambda _target: vols, store)
    assert task.state == tk.FINISHED, task.message


# The second sector of a lease is sanlock's request record: magic, version (u32), lver
# (u64), force_mode (u32), written as its C struct, whose last 4 bytes are padding.
# paxos_lease_init copies them from an uninitialised stack variable and request_record_in
# never reads them: a daemon that has served acquisitions leaves there e.g. the high half of
# a pointer (a7 7f 00 00), so they differ from a fresh writer's (zeros in ours).
def request_padding(sector: int) -> range:
    return range(sector + lease_records.REQUEST.size, sector + lease_records.REQUEST_STRUCT_SIZE)


def without_request_padding(lease: bytes, sector: int) -> bytes:
    pad = request_padding(sector)
    return lease[:pad.start] + bytes(len(pad)) + lease[pad.stop:]


@pytest.mark.parametrize("sector, align", [(512, sc.MiB), (4096, sc.MiB), (4096, 8 * sc.MiB)])
def test_a_lease_written_free_into_an_unnamed_file_is_the_daemons(tmp_path, tmp_path_factory,
                                                                  sector, align):
    """Every byte sanlock reads is what its daemon's write_resource writes at VDSM's volume
    lease place, and sanlock reads it as a free lease of that name."""
    first = shared_sanlock(tmp_path_factory.getbasetemp())
    sanlock = Sanlock(first.run_dir)
    locks = DomainLocks(sanlock, SD, tmp_path, Geometry(align, sector, io_timeout=1))
    by_daemon = tmp_path / "daemon.lease"
    by_daemon.touch()
    locks.format_lease(VOL, Disk(by_daemon, sc.VOLUME_LEASE_OFFSET))
    unnamed = UnnamedFile.open(tmp_path, sc.FILE_VOLUME_PERMISSIONS)
    assert unnamed is not None
    unnamed.write_lease(locks.free_lease_head(VOL), align)
    unnamed.link(tmp_path / "ours.lease")
    unnamed.close()
    ours, daemons = (tmp_path / "ours.lease").read_bytes(), by_daemon.read_bytes()
    assert len(ours) == len(daemons) == align
    assert without_request_padding(ours, sector) == without_request_padding(daemons, sector)
    assert lease_records.REQUEST.unpack_from(ours, sector) == \
        (lease_records.REQUEST_MAGIC, lease_records.REQUEST_VERSION, 0, 0)
    assert not any(ours[2 * sector:])
    disk = Disk(tmp_path / "ours.lease", sc.VOLUME_LEASE_OFFSET)
    assert sanlock.read_resource(disk, align=align, sector=sector) == \
        {"lockspace": SD, "resource": VOL, "version": 0}
    assert locks.owners(VOL, disk) == []


@pytest.fixture
def sanlock_pair(tmp_path, tmp_path_factory) -> Iterator[tuple[SanlockDaemon, SanlockDaemon]]:
    first = shared_sanlock(tmp_path_factory.getbasetemp())  # this process is host 1
    second = start_sanlock(tmp_path / "sl2")  # host 2 runs in child processes
    try:
        yield first, second
    finally:
        second.stop()


def wait_state(locks: DomainLocks, host_id: int, want: HostIdState, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while (state := locks.host_id_state(host_id)) is not want:
        assert time.monotonic() < deadline, f"host id stuck in {state}"
        time.sleep(0.2)


HOST2 = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from storage.locks import DomainLocks, Geometry
    from storage.sanlock_adapter import Sanlock, Disk
    from vdsm_py.errors import AcquireLockFailure
    run_dir, md_dir, name, path, offset = sys.argv[1:6]
    locks = DomainLocks(Sanlock(Path(run_dir)), "SD_UUID", Path(md_dir), Geometry(io_timeout=1))
    locks.acquire_host_id(2, wait=True)
    try:
        try:
            locks.acquire(name, Disk(Path(path), int(offset)))
            print("ACQUIRED", flush=True)
            locks.release(name, Disk(Path(path), int(offset)))
        except AcquireLockFailure as exc:
            print("REFUSED", exc.code, exc, flush=True)
    finally:
        locks.release_host_id(2)
""").replace("SD_UUID", SD)


def host2(daemon: SanlockDaemon, locks: DomainLocks, name: str, path: Path, offset: int) -> str:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", HOST2, str(daemon.run_dir), str(locks.md_dir), name,
         str(path), str(offset)],
        env=daemon.env, capture_output=True, text=True, timeout=120, cwd=root, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_spm_and_volume_leases_are_exclusive_across_hosts(tmp_path, sanlock_pair,
                                                          monkeypatch):
    first, second = sanlock_pair
    sanlock = Sanlock(first.run_dir)
    placed = []  # the leases a task's create wrote ahead (storage.lease_records): a spy
    place_lease = UnnamedVolume.place_lease

    def recording(made: UnnamedVolume, path: Path) -> bool:
        placed.append((path.name, place_lease(made, path)))
        return placed[-1][1]

    monkeypatch.setattr(UnnamedVolume, "place_lease", recording)
    factory = lambda sd, md_dir, geo: DomainLocks(sanlock, sd, md_dir, GEO)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    dom = FileStorageDomain.create(mnt, DomainSpec(SD, "d", sc.LOCALFS_DOMAIN, str(mnt)),
                                   io_timeout=1, locks_factory=factory)
    locks = dom.locks
    assert locks is not None
    # the lockspace and SDM lease were formatted where VDSM puts them
    res = sanlock.read_resource(locks.spm_disk, align=sc.MiB, sector=512)
    assert res == {"lockspace": SD, "resource": "SDM", "version": 0}
    assert locks.spm_disk.offset == sc.MiB

    Volumes(dom).create(VolumeSpec(IMG, VOL, sc.MiB, sc.COW_FORMAT, sc.SPARSE))
    vol_disk = Volumes(dom).lease_disk(IMG, VOL)
    assert sanlock.read_resource(vol_disk, align=sc.MiB, sector=512)["resource"] == VOL
    # a create run as a task writes its lease itself, ahead (see above)
    run_create_task(tmp_path, Volumes(dom), VolumeSpec(IMG, VOL2, sc.MiB, sc.COW_FORMAT,
                                                       sc.SPARSE, parent=VOL))
    vol2_disk = Volumes(dom).lease_disk(IMG, VOL2)
    assert placed == [(vol2_disk.path.name, True)]
    assert sanlock.read_resource(vol2_disk, align=sc.MiB, sector=512) == \
        {"lockspace": SD, "resource": VOL2, "version": 0}

    assert locks.host_id_state(1) is HostIdState.FREE
    locks.acquire_host_id(1, wait=False)  # asynchronous, as at StoragePool.connect
    assert locks.host_id_state(1) in (HostIdState.ACQUIRING, HostIdState.ACQUIRED)
    wait_state(locks, 1, HostIdState.ACQUIRED)
    assert f"s {SD}:1:" in first.client_status()
    try:
        locks.acquire(sc.SDM_LEASE_NAME, locks.spm_disk)
        locks.acquire(VOL, vol_disk)
        locks.acquire(VOL2, vol2_disk)  # the lease written by us works
        assert locks.owners(VOL2, vol2_disk) == [1]
        locks.release(VOL2, vol2_disk)
        assert locks.owners(VOL2, vol2_disk) == []
        try:
            assert set(sanlock.held()) == {(SD, "SDM"), (SD, VOL)}
            assert locks.owners(sc.SDM_LEASE_NAME, locks.spm_disk) == [1]
            status = first.client_status()
            assert f"r {SD}:SDM:" in status and f"r {SD}:{VOL}:" in status
            out = host2(second, locks, "SDM", locks.spm_disk.path, locks.spm_disk.offset)
            assert out.startswith(f"REFUSED {AcquireLockFailure.code}"), out
            assert "held by another host" in out
            out = host2(second, locks, VOL, vol_disk.path, vol_disk.offset)
            assert out.startswith("REFUSED 651"), out
        finally:
            locks.release(VOL, vol_disk)
            locks.release(sc.SDM_LEASE_NAME, locks.spm_disk)
        assert sanlock.held() == []
        # released: the other host gets it now
        assert host2(second, locks, "SDM", locks.spm_disk.path, locks.spm_disk.offset) \
            .startswith("ACQUIRED")
    finally:
        locks.release_host_id(1)
    assert locks.host_id_state(1) is HostIdState.FREE
