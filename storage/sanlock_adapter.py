"""The edge to the sanlock daemon: lockspaces (host ids) and resources (leases).

Wraps the ``sanlock`` C extension that Debian ships as python3-sanlock (there is no PyPI
package). When the virtualenv cannot import it, :func:`load_sanlock` loads the extension
from Debian's dist-packages directory (``SANLOCK_MODULE_DIR`` overrides where), which is
the documented shim; ``scripts/setup`` may instead link the file into the venv.

sanlock's client library finds its daemon through ``SANLOCK_RUN_DIR`` in the environment
of the calling process, so one process talks to one daemon: :class:`Sanlock` sets it at
construction when given a run directory. Every call blocks (disk I/O in the daemon):
run them on the executor. sanlock errors become VDSM's codes (651 AcquireLockFailure,
660, 661 AcquireHostIdFailure, 662, 701). Must not know about domains or pools.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

from vdsm_py.errors import (
    AcquireHostIdFailure,
    AcquireLockFailure,
    ClusterLockInitError,
    ReleaseHostIdFailure,
    ReleaseLockFailure,
    StorageError,
)

log = logging.getLogger("vdsm_py.storage.sanlock")

DEBIAN_MODULE_DIR = Path("/usr/lib/python3/dist-packages")

# sanlock's own result code for "lease held by another host" (SANLK_ACQUIRE_IDLIVE etc.)
_HELD_ELSEWHERE = (-243, -244, errno.EAGAIN, errno.EBUSY)
# the daemon went away (or never ran): the registration is dead, a new one is needed
_DAEMON_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOENT)


def load_sanlock() -> ModuleType:
    """Import the sanlock extension, from the venv or else from Debian's directory."""
    try:
        import sanlock

        return sanlock
    except ImportError:
        pass
    directory = Path(os.environ.get("SANLOCK_MODULE_DIR", DEBIAN_MODULE_DIR))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"sanlock{suffix}"
        if candidate.exists():
            spec = importlib.util.spec_from_file_location("sanlock", candidate)
            if spec is None or spec.loader is None:
                break
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["sanlock"] = module
            return module
    raise ImportError(
        f"the sanlock Python binding is not installed (apt-get install python3-sanlock; "
        f"looked in {directory})"
    )


class HostIdState(Enum):
    """Where this host stands in a domain's lockspace (sanlock's inq_lockspace)."""

    FREE = "free"  # not joined, not joining
    ACQUIRING = "acquiring"  # add_lockspace under way (takes a few io timeouts)
    ACQUIRED = "acquired"


@dataclass(frozen=True)
class Disk:
    """Where a lease lives: a file and an offset in it."""

    path: Path
    offset: int

    def as_sanlock(self) -> list[tuple[str, int]]:
        return [(str(self.path), self.offset)]


class Sanlock:
    """One connection to one sanlock daemon, for one process (the daemon, or a test host).

    Resources are acquired for this process: sanlock releases them all if the process
    dies (that is what lets the other host take the SPM after a crash).
    """

    def __init__(self, run_dir: Path | None = None) -> None:
        if run_dir is not None:
            os.environ["SANLOCK_RUN_DIR"] = str(run_dir)
        self.run_dir = run_dir
        self.lib: Any = load_sanlock()
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _exc(self) -> type[BaseException]:
        return self.lib.SanlockException  # type: ignore[no-any-return]

    # -- formatting ---------------------------------------------------------------------

    def write_lockspace(
        self, lockspace: str, path: Path, *, io_timeout: int, align: int, sector: int
    ) -> None:
        try:
            self.lib.write_lockspace(
                lockspace.encode(), str(path), iotimeout=io_timeout, align=align, sector=sector
            )
        except self._exc() as exc:
            raise ClusterLockInitError(f"cannot format lockspace {lockspace} on {path}: {exc}")

    def write_resource(
        self, lockspace: str, name: str, disk: Disk, *, align: int, sector: int
    ) -> None:
        try:
            self.lib.write_resource(
                lockspace.encode(), name.encode(), disk.as_sanlock(), align=align, sector=sector
            )
        except self._exc() as exc:
            raise ClusterLockInitError(f"cannot format lease {name} on {disk.path}: {exc}")

    def read_resource(self, disk: Disk, *, align: int, sector: int) -> dict[str, Any]:
        try:
            res = self.lib.read_resource(str(disk.path), disk.offset, align=align, sector=sector)
        except self._exc() as exc:
            raise StorageError(f"cannot read lease at {disk.path}:{disk.offset}: {exc}")
        return {
            "lockspace": res["lockspace"].decode(),
            "resource": res["resource"].decode(),
            "version": res["version"],
        }

    # -- host ids -----------------------------------------------------------------------

    def add_lockspace(
        self, lockspace: str, host_id: int, ids: Path, *, io_timeout: int, wait: bool
    ) -> None:
        """Join ``lockspace`` as ``host_id``; with ``wait=False`` return at once."""
        try:
            self.lib.add_lockspace(
                lockspace.encode(), host_id, str(ids), iotimeout=io_timeout, wait=wait
            )
        except self._exc() as exc:
            code = getattr(exc, "errno", None)
            if code in (errno.EEXIST, errno.EINPROGRESS):
                return  # joined already, or joining
            raise AcquireHostIdFailure(
                f"cannot acquire host id {host_id} in {lockspace}: {exc}"
            ) from None

    def host_id_state(self, lockspace: str, host_id: int, ids: Path) -> HostIdState:
        try:
            joined = self.lib.inq_lockspace(lockspace.encode(), host_id, str(ids))
        except self._exc() as exc:
            raise AcquireHostIdFailure(f"cannot inquire lockspace {lockspace}: {exc}") from None
        if joined is None:
            return HostIdState.ACQUIRING
        return HostIdState.ACQUIRED if joined else HostIdState.FREE

    def rem_lockspace(self, lockspace: str, host_id: int, ids: Path, *, wait: bool,
                      unused: bool = False) -> None:
        """Leave ``lockspace``. ``unused``: only if no lease is held in it (sanlock would
        otherwise kill the holders); a lockspace in use is kept, and that is logged."""
        try:
            self.lib.rem_lockspace(lockspace.encode(), host_id, str(ids), wait=wait,
                                   unused=unused)
        except self._exc() as exc:
            if getattr(exc, "errno", None) in (errno.ENOENT, errno.EINPROGRESS):
                return  # not joined, or already leaving
            if unused and getattr(exc, "errno", None) == errno.EBUSY:
                log.warning("host id %d kept in %s: leases are held in it", host_id, lockspace)
                return
            raise ReleaseHostIdFailure(
                f"cannot release host id {host_id} in {lockspace}: {exc}"
            ) from None

    def get_hosts(self, lockspace: str) -> list[dict[str, Any]]:
        try:
            return list(self.lib.get_hosts(lockspace.encode()))
        except self._exc() as exc:
            if getattr(exc, "errno", None) == errno.EAGAIN:
                return []  # just joined: sanlock needs a moment
            raise StorageError(f"cannot list hosts of {lockspace}: {exc}") from None

    def lockspaces(self) -> list[dict[str, Any]]:
        return [
            {**ls, "lockspace": ls["lockspace"].decode()} for ls in self.lib.get_lockspaces()
        ]

    # -- resources ----------------------------------------------------------------------

    def _registered(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = self.lib.register()
                except self._exc() as exc:
                    raise AcquireLockFailure(
                        f"cannot register with sanlock (is the sanlock daemon running?): {exc}",
                        data={"errno": getattr(exc, "errno", None)}) from None
            return self._fd

    def registration(self) -> int:
        """This process's sanlock connection (it hangs up when the sanlock daemon dies)."""
        return self._registered()

    def acquire(self, lockspace: str, name: str, disk: Disk, *, shared: bool = False) -> None:
        fd = self._registered()
        try:
            self.lib.acquire(
                lockspace.encode(), name.encode(), disk.as_sanlock(), slkfd=fd, shared=shared
            )
        except self._exc() as exc:
            code = getattr(exc, "errno", None)
            if code == errno.EEXIST:
                return  # this process holds it already
            if code in _DAEMON_GONE:
                self._drop_registration()
                why = f"the sanlock daemon is not reachable ({exc})"
            else:
                why = "held by another host" if code in _HELD_ELSEWHERE else str(exc)
            raise AcquireLockFailure(
                f"cannot acquire lease {name} of {lockspace}: {why}", data={"errno": code}
            ) from None
        log.info("acquired lease %s of %s at %s:%d", name, lockspace, disk.path, disk.offset)

    def _drop_registration(self) -> None:
        """Forget a registration whose daemon is gone (its leases went with it)."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass  # closed already
                self._fd = None

    def release(self, lockspace: str, name: str, disk: Disk) -> None:
        fd = self._registered()
        try:
            self.lib.release(lockspace.encode(), name.encode(), disk.as_sanlock(), slkfd=fd)
        except self._exc() as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                return  # not held
            raise ReleaseLockFailure(f"cannot release lease {name} of {lockspace}: {exc}")
        log.info("released lease %s of %s", name, lockspace)

    def held(self) -> list[tuple[str, str]]:
        """(lockspace, resource) of every lease this process holds."""
        if self._fd is None:
            return []
        try:
            found = self.lib.inquire(slkfd=self._fd)
        except self._exc() as exc:
            raise StorageError(f"cannot inquire sanlock: {exc}") from None
        return [(r["lockspace"].decode(), r["resource"].decode()) for r in found]

    def owners(self, lockspace: str, name: str, disk: Disk, *, align: int, sector: int) -> list[int]:
        """Host ids holding the lease (read from storage)."""
        try:
            found = self.lib.read_resource_owners(
                lockspace.encode(), name.encode(), disk.as_sanlock(), align=align, sector=sector
            )
        except self._exc() as exc:
            raise StorageError(f"cannot read owners of {name}: {exc}") from None
        return [int(o["host_id"]) for o in found]
