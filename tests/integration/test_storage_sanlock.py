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
from storage.domain import DomainSpec, FileStorageDomain
from storage.locks import DomainLocks, Geometry
from storage.sanlock_adapter import HostIdState, Sanlock
from storage.volume import Volumes, VolumeSpec
from tests.integration.sanlock_daemon import SanlockDaemon, shared_sanlock, start_sanlock
from vdsm_py.errors import AcquireLockFailure

SD = "a1b2c3d4-7777-4a1e-8a53-0d1f2c3b4a5d"
IMG = "b2c3d4e5-8888-4b2f-9b64-1e2a3d4c5b6e"
VOL = "c3d4e5f6-9999-4c30-8c75-2f3b4e5d6c7f"
GEO = Geometry(io_timeout=1)


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


def test_spm_and_volume_leases_are_exclusive_across_hosts(tmp_path, sanlock_pair):
    first, second = sanlock_pair
    sanlock = Sanlock(first.run_dir)
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

    assert locks.host_id_state(1) is HostIdState.FREE
    locks.acquire_host_id(1, wait=False)  # asynchronous, as at StoragePool.connect
    assert locks.host_id_state(1) in (HostIdState.ACQUIRING, HostIdState.ACQUIRED)
    wait_state(locks, 1, HostIdState.ACQUIRED)
    assert f"s {SD}:1:" in first.client_status()
    try:
        locks.acquire(sc.SDM_LEASE_NAME, locks.spm_disk)
        locks.acquire(VOL, vol_disk)
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
