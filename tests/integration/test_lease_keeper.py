"""The lease keeper process on its own, against a private real sanlock daemon: it answers
once, holds the lease for as long as asked, releases on SIGUSR1, follows the QEMU it guards
(a stand-in process whose command line looks like libvirt's QEMU), kills that QEMU when its
lease is revoked (SIGTERM, or the sanlock daemon going away), and is recognised by its
``/proc/<pid>/cmdline`` only for its own VM and record directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.lease_keeper import (
    RELEASED,
    REVOKED,
    VM_EXITED,
    KeeperRecord,
    find_qemu,
    is_keeper,
    keeper_argv,
    record_path,
)
from tests.integration.lease_keepers import holder, wait_for
from tests.integration.sanlock_daemon import SANLOCK, SanlockDaemon, start_sanlock

LS = "keeper-test-ls"
MB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


class Storage:
    """A lockspace joined as host 1 on a private sanlock daemon, set up with sanlock's own
    CLI (this pytest process's sanlock library talks to another daemon)."""

    def __init__(self, base: Path) -> None:
        self.sanlock = start_sanlock(base / "sanlock")
        self.ids, self.leases = base / "ids", base / "leases"
        for path in (self.ids, self.leases):
            path.write_bytes(b"\0" * (8 * MB))
        self.client("init", "-s", f"{LS}:0:{self.ids}:0", "-o", "1")
        self.client("add_lockspace", "-s", f"{LS}:1:{self.ids}:0", "-o", "1")

    def client(self, *args: str) -> None:
        subprocess.run([SANLOCK, "client", *args], env=self.sanlock.env, check=True,
                       capture_output=True, timeout=60)

    def lease(self, name: str, slot: int) -> list[object]:
        self.client("init", "-r", f"{LS}:{name}:{self.leases}:{slot * MB}")
        return [LS, name, slot * MB, str(self.leases)]


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    st = Storage(tmp_path)
    try:
        yield st
    finally:
        st.sanlock.stop()


def spawn(directory: Path, vm_id: str, lease: list[object], sanlock: SanlockDaemon,
          guard: bool = False) -> subprocess.Popen[bytes]:
    argv = keeper_argv(sys.executable, directory, vm_id, [lease], guard=guard,
                       sanlock_run_dir=sanlock.run_dir)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=ROOT, env=sanlock.env)


def answer(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    assert proc.stdout is not None
    return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]


def fake_qemu(vm_id: str) -> subprocess.Popen[bytes]:
    """A process whose command line is libvirt's way: qemu-system-*, ``-uuid <vmId>``."""
    proc = subprocess.Popen(["qemu-system-x86_64", "-c", "import time; time.sleep(600)",
                             "-uuid", vm_id], executable=sys.executable)
    wait_for(lambda: find_qemu(vm_id) == proc.pid, 30, "the fake QEMU exec'd")
    return proc


def final(directory: Path, vm_id: str) -> KeeperRecord:
    rec = KeeperRecord.load(record_path(directory, vm_id))
    assert rec is not None
    return rec


def test_a_keeper_holds_until_told_and_is_known_only_for_its_vm_and_directory(
        storage: Storage, tmp_path: Path):
    vm_id, directory = str(uuid.uuid4()), tmp_path / "records"
    directory.mkdir()
    lease = storage.lease(vm_id, 3)
    proc = spawn(directory, vm_id, lease, storage.sanlock)
    try:
        assert answer(proc) == {"ok": True}
        assert holder(storage.sanlock, LS, vm_id) == proc.pid
        assert final(directory, vm_id).state == "held"
        assert is_keeper(proc.pid, directory, vm_id)
        assert not is_keeper(proc.pid, directory, str(uuid.uuid4()))
        assert not is_keeper(proc.pid, tmp_path, vm_id)
        assert not is_keeper(os.getpid(), directory, vm_id)
        # a second keeper for the same lease on the same host is refused
        other = spawn(tmp_path, vm_id, lease, storage.sanlock)
        refused = answer(other)
        assert refused["ok"] is False and other.wait(30) == 2, refused
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert holder(storage.sanlock, LS, vm_id) is None
    assert final(directory, vm_id).state == RELEASED


def test_a_keeper_follows_its_qemu_and_kills_it_when_the_lease_is_revoked(
        storage: Storage, tmp_path: Path):
    vm_id = str(uuid.uuid4())
    lease = storage.lease(vm_id, 4)
    qemu = fake_qemu(vm_id)
    keepers: list[subprocess.Popen[bytes]] = []
    try:
        assert find_qemu(str(uuid.uuid4())) is None
        # told the domain runs (SIGUSR2), it guards QEMU; QEMU ends -> lease released
        keepers.append(spawn(tmp_path, vm_id, lease, storage.sanlock))
        assert answer(keepers[0]) == {"ok": True}
        keepers[0].send_signal(signal.SIGUSR2)
        wait_for(lambda: final(tmp_path, vm_id).qemu_pid == qemu.pid, 30, "QEMU guarded")
        qemu.kill()
        qemu.wait()
        assert keepers[0].wait(30) == 0 and final(tmp_path, vm_id).state == VM_EXITED
        assert holder(storage.sanlock, LS, vm_id) is None

        # --guard: guarding from the start; SIGTERM (sanlock revoking) kills QEMU
        qemu = fake_qemu(vm_id)
        keepers.append(spawn(tmp_path, vm_id, lease, storage.sanlock, guard=True))
        assert answer(keepers[1]) == {"ok": True}
        assert final(tmp_path, vm_id).qemu_pid == qemu.pid
        keepers[1].send_signal(signal.SIGTERM)
        assert keepers[1].wait(30) == 4 and qemu.wait(30) == -signal.SIGKILL
        assert final(tmp_path, vm_id).state == REVOKED

        # the sanlock daemon dies: the lease is gone with it, and so must QEMU be
        qemu = fake_qemu(vm_id)
        keepers.append(spawn(tmp_path, vm_id, lease, storage.sanlock, guard=True))
        assert answer(keepers[2]) == {"ok": True}
        storage.sanlock.proc.kill()
        storage.sanlock.proc.wait()
        assert qemu.wait(30) == -signal.SIGKILL
        assert keepers[2].wait(30) == 4
        rec = final(tmp_path, vm_id)
        assert rec.state == REVOKED and "sanlock daemon went away" in rec.error
    finally:
        for proc in (qemu, *keepers):
            proc.kill()
            proc.wait()
