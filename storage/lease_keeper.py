"""The lease keeper: a small process that holds one VM's leases on sanlock for that VM.

Run as ``python -m storage.lease_keeper --dir D --vm-id VM [--key KEY] [--guard] --lease LS
RES OFF PATH`` by :mod:`storage.vm_lease_keepers`, in a session of its own, so that the
leases outlive the daemon (a daemon SIGKILL must not free a running VM's lease). A VM may
have several keepers (its VM leases; each exclusive drive's volume lease), told apart by
their key (``<vmId>`` or ``<vmId>.<volUUID>``; the vmId when not given). The keeper:

1. writes its record ``D/<key>.json`` (pid, leases, state ``acquiring``), registers with
   sanlock and acquires every lease; reports ``{"ok": true}`` or ``{"ok": false, "errno",
   "error"}`` as one JSON line on its stdout, then closes it;
2. holds the leases until one of:

   - SIGUSR1 (the daemon: the VM is Down or its start failed): release, state ``released``;
   - the QEMU process it guards exits: release, state ``vm-exited``;
   - SIGTERM (what sanlock sends the holder when the lockspace is lost), or its sanlock
     registration breaking (the sanlock daemon died): the leases are gone, so the QEMU it
     guards is killed (SIGKILL, sanlock's own semantics for a VM without its lease),
     state ``revoked``;

   SIGUSR2 (the daemon: the domain runs now) makes it find the VM's QEMU (libvirt starts
   it with ``-uuid <vmId>``) and guard it from then on; ``--guard`` does so at once.

The record is left with its final state for the daemon, which removes it. A keeper killed
by SIGKILL leaves state ``held``: sanlock frees its leases, and the daemon (or its recovery)
stops the VM. Knows nothing of domains, pools or libvirt.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import signal
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vdsm_py.storage.keeper")

MODULE = "storage.lease_keeper"
# final states a keeper writes; "held" on a dead keeper means it was killed
RELEASED, VM_EXITED, REVOKED, FAILED = "released", "vm-exited", "revoked", "failed"
ACQUIRING, HELD = "acquiring", "held"
EXIT_FAILED = 2
EXIT_REVOKED = 4
QEMU_KILL_WAIT = 30.0


@dataclass
class KeeperRecord:
    """What a keeper writes to ``<dir>/<key>.json`` (the daemon reads it back)."""

    vm_id: str
    pid: int
    leases: list[list[Any]]  # [lockspace, resource, offset, path]
    state: str = ACQUIRING
    qemu_pid: int | None = None
    error: str = ""
    key: str = ""  # the record's name; the vmId when empty

    @property
    def name(self) -> str:
        return self.key or self.vm_id

    def save(self, directory: Path) -> None:
        tmp = directory / f".{self.name}.{self.pid}.tmp"
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(tmp, record_path(directory, self.name))

    @classmethod
    def load(cls, path: Path) -> KeeperRecord | None:
        """The record at ``path``; None if absent or unreadable (a torn write)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def record_path(directory: Path, key: str) -> Path:
    return directory / f"{key}.json"


def vm_of(key: str) -> str:
    """The VM a keeper key belongs to (``<vmId>`` or ``<vmId>.<volUUID>``)."""
    return key.split(".", 1)[0]


def keeper_argv(python: str, directory: Path, vm_id: str, leases: list[list[Any]], *,
                guard: bool, sanlock_run_dir: Path | None, key: str | None = None) -> list[str]:
    argv = [python, "-m", MODULE, "--dir", str(directory), "--vm-id", vm_id]
    if key is not None and key != vm_id:
        argv += ["--key", key]
    if sanlock_run_dir is not None:
        argv += ["--sanlock-run-dir", str(sanlock_run_dir)]
    if guard:
        argv.append("--guard")
    for lockspace, resource, offset, path in leases:
        argv += ["--lease", lockspace, resource, str(offset), path]
    return argv


def is_keeper(pid: int, directory: Path, key: str) -> bool:
    """Whether ``pid`` is a live keeper named ``key`` recording in ``directory``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return (MODULE in argv and (_after(argv, "--key") or _after(argv, "--vm-id")) == key
            and _after(argv, "--dir") == str(directory))


def _after(argv: list[str], flag: str) -> str | None:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return None


def find_qemu(vm_id: str) -> int | None:
    """The pid of the QEMU running ``vm_id`` (libvirt passes ``-uuid <vmId>``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if argv and os.path.basename(argv[0]).startswith(b"qemu") \
                and _after([a.decode(errors="replace") for a in argv], "-uuid") == vm_id:
            found.append(int(entry))
    if len(found) > 1:
        log.error("vmId=%s: several QEMU processes claim it: %s", vm_id, found)
    return found[0] if len(found) == 1 else None


class Keeper:
    def __init__(self, args: argparse.Namespace) -> None:
        from storage.sanlock_adapter import Disk, Sanlock

        self.dir: Path = args.dir
        self.vm_id: str = args.vm_id
        self.leases = [(ls, res, Disk(Path(path), int(off))) for ls, res, off, path in args.lease]
        self.record = KeeperRecord(self.vm_id, os.getpid(),
                                   [[ls, res, d.offset, str(d.path)] for ls, res, d in self.leases],
                                   key=args.key or "")
        self.sanlock = Sanlock(args.sanlock_run_dir)
        self.qemu_fd: int | None = None

    # -- acquiring --------------------------------------------------------------------

    def acquire(self) -> bool:
        from vdsm_py.errors import AcquireLockFailure, VdsmError

        self.record.save(self.dir)
        try:
            for lockspace, resource, disk in self.leases:
                self.sanlock.acquire(lockspace, resource, disk)
            # sanlock says EEXIST (taken by the adapter as "mine already") when another
            # process of this host holds the lease: only what sanlock lists for us counts
            mine = set(self.sanlock.held())
            for lockspace, resource, _disk in self.leases:
                if (lockspace, resource) not in mine:
                    raise AcquireLockFailure(
                        f"cannot acquire lease {resource} of {lockspace}: held by another "
                        "process of this host", data={"errno": errno.EEXIST})
        except VdsmError as exc:
            errno_ = (exc.data or {}).get("errno")
            self._finish(FAILED, exc.message)
            _report({"ok": False, "errno": errno_, "error": exc.message, "code": exc.code})
            return False
        self.record.state = HELD
        self.record.save(self.dir)
        return True

    # -- holding ----------------------------------------------------------------------

    def guard(self) -> None:
        """Find the VM's QEMU and watch it (again: a second call keeps the first)."""
        if self.qemu_fd is not None:
            return
        pid = find_qemu(self.vm_id)
        if pid is None:
            log.info("vmId=%s: no QEMU process to guard", self.vm_id)
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        if find_qemu(self.vm_id) != pid:  # the pid was reused before we held it
            os.close(fd)
            return
        self.qemu_fd = fd
        self.record.qemu_pid = pid
        self.record.save(self.dir)
        log.info("vmId=%s: guarding QEMU %d", self.vm_id, pid)

    def hold(self, wakeup: int) -> int:
        """Wait for a reason to stop; the exit status."""
        poller = select.poll()
        poller.register(wakeup, select.POLLIN)
        reg_fd = self.sanlock.registration()
        poller.register(reg_fd, select.POLLIN | select.POLLHUP)
        while True:
            if self.qemu_fd is not None:
                poller.register(self.qemu_fd, select.POLLIN)
            for fd, _ev in poller.poll():
                if fd == reg_fd:
                    if _hung_up(reg_fd):
                        return self._revoke("the sanlock daemon went away")
                    poller.unregister(reg_fd)  # it speaks; never seen, never read
                    log.warning("vmId=%s: unexpected data from sanlock", self.vm_id)
                if fd == self.qemu_fd:
                    self._release(VM_EXITED)
                    return 0
            for sig in _drain(wakeup):
                if sig == signal.SIGUSR1:
                    self._release(RELEASED)
                    return 0
                if sig == signal.SIGTERM:
                    return self._revoke("asked to stop (SIGTERM): the lease is lost")
                if sig == signal.SIGUSR2:
                    self.guard()

    def _release(self, state: str) -> None:
        from vdsm_py.errors import VdsmError

        for lockspace, resource, disk in reversed(self.leases):
            try:
                self.sanlock.release(lockspace, resource, disk)
            except VdsmError as exc:  # exiting frees it anyway
                log.error("vmId=%s: cannot release %s: %s", self.vm_id, resource, exc)
        self._finish(state)

    def _revoke(self, why: str) -> int:
        log.error("vmId=%s: %s; killing the VM's QEMU", self.vm_id, why)
        if self.qemu_fd is not None:
            try:
                signal.pidfd_send_signal(self.qemu_fd, signal.SIGKILL)
                select.select([self.qemu_fd], [], [], QEMU_KILL_WAIT)
            except ProcessLookupError:
                pass  # gone already
        self._finish(REVOKED, why)
        return EXIT_REVOKED

    def _finish(self, state: str, error: str = "") -> None:
        self.record.state, self.record.error = state, error
        self.record.save(self.dir)
        log.info("vmId=%s: lease keeper done (%s)", self.vm_id, state)


def _report(message: dict[str, Any]) -> None:
    """The one line the daemon waits for; stdout is closed after it."""
    try:
        os.write(1, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the daemon is gone: the record tells the rest
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def _hung_up(fd: int) -> bool:
    """Whether the peer of socket ``fd`` closed it (looked at without reading)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.close()


def _drain(fd: int) -> list[int]:
    try:
        return list(os.read(fd, 64))
    except BlockingIOError:
        return []


def _signals() -> int:
    """Catch our signals through a wakeup pipe (handled in the poll loop, in order)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    return read_end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--vm-id", required=True)
    parser.add_argument("--key", default=None)
    parser.add_argument("--sanlock-run-dir", type=Path, default=None)
    parser.add_argument("--guard", action="store_true")
    parser.add_argument("--lease", nargs=4, action="append", required=True,
                        metavar=("LOCKSPACE", "RESOURCE", "OFFSET", "PATH"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wakeup = _signals()  # before anything: a release may come early
    keeper = Keeper(args)
    if not keeper.acquire():
        return EXIT_FAILED
    if args.guard:
        keeper.guard()  # before the answer: once adopted, the VM is guarded
    _report({"ok": True})
    return keeper.hold(wakeup)


if __name__ == "__main__":
    sys.exit(main())
