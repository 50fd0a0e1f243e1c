"""The daemon's side of the VM lease keepers (:mod:`storage.lease_keeper`).

A VM has a keeper per unit of leases it may give back on its own: one for its VM leases
(key ``<vmId>``) and one per exclusive drive's volume lease (key ``<vmId>.<volUUID>``, so
that unplugging the drive gives back that lease alone). Owns starting a keeper (argv list, its own session, stdin closed, its log next to its
record) and waiting for its one-line answer; watching every keeper through a pidfd on the
event loop; asking one to release (SIGUSR1) or to guard the VM's QEMU (SIGUSR2); and, after
a daemon restart, adopting live keepers (their ``/proc/<pid>/cmdline`` names this record
directory and the VM) and releasing those whose VM is gone. A keeper that exits while
nobody asked it to, other than because its QEMU ended, means the VM lost its lease: the
``on_lost`` callback (the VM manager) stops the VM.

Records ``<dir>/<key>.json`` are written by the keepers and removed here once a keeper is
gone. Blocking work (spawn, record files, /proc) runs on the executor. Must not talk to
sanlock itself: the keepers hold the leases.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from storage.lease_keeper import (
    FAILED,
    REVOKED,
    VM_EXITED,
    KeeperRecord,
    is_keeper,
    keeper_argv,
    record_path,
    vm_of,
)
from vdsm_py.errors import AcquireLockFailure, VmLeaseHeld
from vdsm_py.executor import Executor

log = logging.getLogger("vdsm_py.storage.keepers")

# sanlock's answers for a lease another host holds (SANLK_ACQUIRE_IDLIVE, _OWNED, busy)
HELD_ELSEWHERE = (-243, -244, errno.EAGAIN, errno.EBUSY)
ANSWER_TIMEOUT = 120.0  # a keeper's acquire: sanlock needs a few io timeouts at most
EXIT_TIMEOUT = 30.0  # a release; then SIGKILL (sanlock frees a dead holder's leases)

LeaseSpec = list[Any]  # [lockspace, resource, offset, path]
LostCallback = Callable[[str, str], None]


@dataclass
class _Keeper:
    key: str
    vm_id: str
    pid: int
    pidfd: int
    proc: subprocess.Popen[bytes] | None  # our child (reaped here); None when adopted
    exited: asyncio.Future[KeeperRecord | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    releasing: bool = False  # its exit is expected (asked to release, or refused)
    starting: bool = False  # its answer is awaited: an exit now is a failed start


def _names(leases: list[LeaseSpec]) -> str:
    return ", ".join(f"{spec[1]} of domain {spec[0]}" for spec in leases)


def unit_key(vm_id: str, volume_id: str | None = None) -> str:
    """The key of a VM's keeper: its VM leases, or the volume lease of one drive."""
    return vm_id if volume_id is None else f"{vm_id}.{volume_id}"


class LeaseKeepers:
    """The keepers of this daemon's VMs, by key (see :func:`unit_key`)."""

    def __init__(self, directory: Path, executor: Executor, *,
                 sanlock_run_dir: Path | None = None, python: str = sys.executable) -> None:
        self.dir = directory
        self.executor = executor
        self.sanlock_run_dir = sanlock_run_dir
        self.python = python
        self.on_lost: LostCallback | None = None
        self._keepers: dict[str, _Keeper] = {}

    async def _run(self, fn: Callable[[], Any], name: str) -> Any:
        return await self.executor.run(fn, timeout=EXIT_TIMEOUT, name=name)

    def pid(self, key: str) -> int | None:
        keeper = self._keepers.get(key)
        return keeper.pid if keeper is not None else None

    def keys(self, vm_id: str) -> list[str]:
        """The keys of the VM's keepers this daemon watches."""
        return [key for key, keeper in self._keepers.items() if keeper.vm_id == vm_id]

    # -- starting ---------------------------------------------------------------------

    async def start(self, vm_id: str, leases: list[LeaseSpec], *, guard: bool = False,
                    key: str | None = None) -> None:
        """A keeper holding ``leases`` for the VM; raises VmLeaseHeld / AcquireLockFailure."""
        key = key or vm_id
        if key in self._keepers:
            await self.release_key(key)  # a leftover of an earlier life of this VM here
        stale = await self._run(lambda: self._live_record(key), "keeper record")
        if stale is not None:
            log.warning("vmId=%s: releasing the leftover lease keeper %d", vm_id, stale.pid)
            await self._adopt_pid(key, vm_id, stale.pid)
            await self.release_key(key)
        argv = keeper_argv(self.python, self.dir, vm_id, leases, guard=guard,
                           sanlock_run_dir=self.sanlock_run_dir, key=key)
        proc = await self._run(lambda: self._spawn(key, argv), "start lease keeper")
        keeper = self._watch(key, vm_id, proc.pid, proc)
        keeper.starting = True
        try:
            answer = await asyncio.wait_for(self._answer(proc), ANSWER_TIMEOUT)
        except BaseException:
            keeper.releasing = True
            self._signal(keeper, signal.SIGKILL)
            await asyncio.shield(keeper.exited)
            raise
        finally:
            keeper.starting = False
        if answer.get("ok") is True:
            log.info("vmId=%s: lease keeper %d holds %d leases", vm_id, proc.pid, len(leases))
            return
        keeper.releasing = True  # it exits by itself after a refusal
        await asyncio.shield(keeper.exited)
        why = str(answer.get("error") or "the lease keeper failed")
        if answer.get("errno") in HELD_ELSEWHERE:
            raise VmLeaseHeld(f"lease {_names(leases)} is held by another host")
        raise AcquireLockFailure(why, data={"errno": answer.get("errno")})

    def _spawn(self, key: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{key}.log", "ab") as err:
            # its own session: no signal to the daemon's process group reaches it
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, close_fds=True, start_new_session=True)

    async def _answer(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
        try:
            line = await reader.readline()
        finally:
            transport.close()
        if not line:
            return {"ok": False, "error": "the lease keeper exited without an answer (see "
                    f"{self.dir}/*.log)"}
        try:
            answer = json.loads(line)
        except ValueError:
            return {"ok": False, "error": f"unreadable lease keeper answer {line[:80]!r}"}
        return answer if isinstance(answer, dict) else {"ok": False, "error": "bad answer"}

    # -- watching ---------------------------------------------------------------------

    def _watch(self, key: str, vm_id: str, pid: int, proc: subprocess.Popen[bytes] | None,
               pidfd: int | None = None) -> _Keeper:
        if pidfd is None:
            pidfd = os.pidfd_open(pid)
        keeper = _Keeper(key, vm_id, pid, pidfd, proc)
        self._keepers[key] = keeper
        asyncio.get_running_loop().add_reader(pidfd, self._on_exit, keeper)
        return keeper

    def _unwatch(self, keeper: _Keeper) -> None:
        asyncio.get_running_loop().remove_reader(keeper.pidfd)
        os.close(keeper.pidfd)
        keeper.pidfd = -1  # never signal through a number the kernel may hand out again
        if self._keepers.get(keeper.key) is keeper:
            del self._keepers[keeper.key]

    def _on_exit(self, keeper: _Keeper) -> None:
        self._unwatch(keeper)
        if keeper.proc is not None:
            keeper.proc.poll()  # reap our child
        asyncio.get_running_loop().create_task(self._exited(keeper),
                                               name=f"keeper-exit-{keeper.vm_id}")

    async def _exited(self, keeper: _Keeper) -> None:
        try:
            record = await self._run(lambda: self._take_record(keeper), "keeper record")
        except Exception as exc:  # noqa: BLE001 - the waiters must learn of the exit anyway
            log.error("vmId=%s: cannot read the lease keeper's record: %s", keeper.vm_id, exc)
            record = None
        if not keeper.exited.done():
            keeper.exited.set_result(record)
        state = record.state if record is not None else "unknown"
        if keeper.releasing or keeper.starting or state == VM_EXITED:
            log.info("vmId=%s: lease keeper %d ended (%s)", keeper.vm_id, keeper.pid, state)
            return
        why = (record.error if record is not None and record.error else
               f"its lease keeper {keeper.pid} died (state {state})")
        log.error("vmId=%s: VM lease lost: %s", keeper.vm_id, why)
        if self.on_lost is not None:
            self.on_lost(keeper.vm_id, why)

    def _take_record(self, keeper: _Keeper) -> KeeperRecord | None:
        path = record_path(self.dir, keeper.key)
        record = KeeperRecord.load(path)
        if record is not None and record.pid == keeper.pid:
            path.unlink(missing_ok=True)
            return record
        return None  # a newer keeper's record (or none)

    def _signal(self, keeper: _Keeper, sig: int) -> bool:
        if keeper.pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(keeper.pidfd, sig)
        except (ProcessLookupError, OSError):
            return False  # exited (its pidfd may be closed already)
        return True

    # -- asking -----------------------------------------------------------------------

    async def release(self, vm_id: str) -> None:
        """All the VM's keepers give their leases back and exit."""
        keys = self.keys(vm_id)
        if keys:
            await asyncio.gather(*(self.release_key(key) for key in keys))

    async def release_key(self, key: str) -> None:
        """The keeper gives the leases back and exits (SIGKILL if it will not)."""
        keeper = self._keepers.get(key)
        if keeper is None:
            return
        vm_id = keeper.vm_id
        keeper.releasing = True
        self._signal(keeper, signal.SIGUSR1)
        try:
            await asyncio.wait_for(asyncio.shield(keeper.exited), EXIT_TIMEOUT)
        except TimeoutError:
            log.error("vmId=%s: lease keeper %d did not release in %.0f s; killing it",
                      vm_id, keeper.pid, EXIT_TIMEOUT)
            self._signal(keeper, signal.SIGKILL)
            await asyncio.shield(keeper.exited)

    def guard(self, vm_id: str) -> bool:
        """The VM's domain runs: its keepers watch its QEMU. False if it has none (or one
        of them is gone)."""
        keepers = [self._keepers[key] for key in self.keys(vm_id)]
        signalled = [self._signal(keeper, signal.SIGUSR2) for keeper in keepers]
        return bool(keepers) and all(signalled)

    # -- after a restart --------------------------------------------------------------

    def _live_record(self, key: str) -> KeeperRecord | None:
        record = KeeperRecord.load(record_path(self.dir, key))
        if record is None or not is_keeper(record.pid, self.dir, key):
            return None
        return record

    async def _adopt_pid(self, key: str, vm_id: str, pid: int) -> bool:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        if not is_keeper(pid, self.dir, key):  # checked again now that the pid is pinned
            os.close(pidfd)
            return False
        self._watch(key, vm_id, pid, None, pidfd)
        return True

    async def adopt(self, vm_id: str, units: Mapping[str, list[LeaseSpec]]) -> None:
        """A running leased VM found by recovery: for each unit of its leases (by key) its
        live keeper, or a new one guarding it; a live keeper of the VM for a unit it holds
        no more (a drive unplugged just before a crash) is released."""
        for key, leases in units.items():
            if key in self._keepers:
                continue
            record = await self._run(partial(self._live_record, key), "keeper record")
            if record is None or record.state in (FAILED, REVOKED) \
                    or not await self._adopt_pid(key, vm_id, record.pid):
                log.warning("vmId=%s: no live lease keeper %s; taking the leases again",
                            vm_id, key)
                await self.start(vm_id, leases, guard=True, key=key)
                continue
            log.info("vmId=%s: adopted lease keeper %d (%s)", vm_id, record.pid, record.state)
        await self._release_listed(lambda key: vm_of(key) == vm_id and key not in units,
                                   "the VM holds these leases no more")
        self.guard(vm_id)

    async def reap(self, keep: Collection[str]) -> None:
        """Release the keepers (and drop the records) of VMs that are not in ``keep``."""
        await self._release_listed(lambda key: vm_of(key) not in keep, "the VM is gone")

    async def _release_listed(self, select: Callable[[str], bool], why: str) -> None:
        """Release the keepers whose records are selected (by key) and not watched yet;
        records of dead keepers are dropped."""
        def listed() -> list[tuple[str, int | None]]:
            out: list[tuple[str, int | None]] = []
            if not self.dir.is_dir():
                return out
            for path in self.dir.glob("*.json"):
                key = path.stem
                if key in self._keepers or not select(key):
                    continue
                record = KeeperRecord.load(path)
                if record is not None and is_keeper(record.pid, self.dir, key):
                    out.append((key, record.pid))
                else:
                    path.unlink(missing_ok=True)
                    out.append((key, None))
            return out
        for key, pid in await self._run(listed, "reap lease keepers"):
            if pid is None:
                log.info("vmId=%s: dropped the record %s of a dead lease keeper", vm_of(key),
                         key)
            elif await self._adopt_pid(key, vm_of(key), pid):
                log.warning("vmId=%s: %s; releasing its lease keeper %d", vm_of(key), why, pid)
                await self.release_key(key)

    def stop(self) -> None:
        """Daemon stop: stop watching. The keepers go on holding the running VMs' leases."""
        for keeper in list(self._keepers.values()):
            self._unwatch(keeper)
