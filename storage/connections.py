"""Connections to storage servers: where each domain's mount point comes from.

Every connection ends as a directory under ``<data-center root>/mnt/`` named as VDSM names
it (the remote path with ``_`` doubled and ``/`` turned into ``_``):

* ``localfs``: a symlink to a local directory, which must exist and be writable;
* ``posixfs``: ``mount -t <vfs_type> -o <options> <spec> <dir>`` (a device, image or path);
* ``nfs``: the same with VDSM's options (``soft,nosharecache,timeo=100,retrans=3`` and
  ``nfsvers``/``minorversion``); tested against a real kernel NFS server inside a stock-kernel
  guest (tests/integration/test_storage_nfs.py), since the CI kernel has no NFS.

Connect and disconnect are idempotent. Mounting needs root. Commands are argv lists.
Blocking: call from the executor. Must not read domains.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from storage import constants as sc
from vdsm_py.errors import (
    MountError,
    StorageServerAccessPermissionError,
    StorageServerConnectionError,
    StorageServerValidationError,
    invalid_parameter,
)

log = logging.getLogger("vdsm_py.storage.connections")

LOCALFS, NFS, POSIXFS = sc.LOCALFS_DOMAIN, sc.NFS_DOMAIN, sc.POSIXFS_DOMAIN
NFS_DEFAULT_OPTIONS = ("soft", "nosharecache")


def mount_name(remote_path: str) -> str:
    """VDSM's transformPath: ``/srv/a_b`` → ``_srv_a__b``."""
    return remote_path.replace("_", "__").replace("/", "_")


@dataclass(frozen=True)
class ConnectionSpec:
    """One element of ``connectStorageServer``'s connection list."""

    id: str
    domain_type: int
    connection: str
    vfs_type: str = ""
    mnt_options: str = ""
    nfs_version: str = ""
    timeout: int = 100
    retrans: int = 3

    def check(self) -> None:
        if self.domain_type not in (LOCALFS, NFS, POSIXFS):
            raise invalid_parameter("domainType", f"unsupported storage type {self.domain_type}")
        if not self.connection or "\0" in self.connection or "\n" in self.connection:
            raise invalid_parameter("connection", "empty or not a path")
        if self.domain_type == LOCALFS and not os.path.isabs(self.connection):
            raise invalid_parameter("connection", "a local directory must be an absolute path")
        if self.domain_type == POSIXFS and not self.vfs_type:
            raise invalid_parameter("vfs_type", "a posixfs connection needs its file system type")
        for value in (self.vfs_type, self.mnt_options):
            if value.startswith("-"):
                raise invalid_parameter("connection", f"option may not start with '-': {value}")

    def mount_options(self) -> list[str]:
        opts = [o for o in self.mnt_options.split(",") if o]
        if self.domain_type == NFS:
            base = [*NFS_DEFAULT_OPTIONS, f"timeo={self.timeout}", f"retrans={self.retrans}"]
            if self.nfs_version:
                major, _, minor = self.nfs_version.partition(".")
                base.append(f"nfsvers={int(major)}")
                if minor:
                    base.append(f"minorversion={int(minor)}")
            opts = base + opts
        return opts


class Connections:
    """The connections of this host, under ``root/mnt``."""

    def __init__(self, root: Path, *, mount_timeout: float = 180.0):
        self.mnt_dir = root / sc.MOUNT_DIR
        self.mount_timeout = mount_timeout

    def mount_point(self, spec: ConnectionSpec) -> Path:
        return self.mnt_dir / mount_name(spec.connection)

    def mount_points(self) -> list[Path]:
        try:
            return [self.mnt_dir / n for n in sorted(os.listdir(self.mnt_dir))]
        except FileNotFoundError:
            return []

    def connect(self, spec: ConnectionSpec) -> Path:
        spec.check()
        self.mnt_dir.mkdir(parents=True, exist_ok=True)
        target = self.mount_point(spec)
        if spec.domain_type == LOCALFS:
            self._link_local(spec, target)
        else:
            self._mount(spec, target)
        log.info("connected %s (id %s) at %s", spec.connection, spec.id, target)
        return target

    def disconnect(self, spec: ConnectionSpec) -> None:
        spec.check()
        target = self.mount_point(spec)
        if spec.domain_type == LOCALFS:
            if target.is_symlink():
                target.unlink()
            return
        if os.path.ismount(target):
            self._run(["umount", "--", str(target)], "unmount")
        if target.is_dir():
            target.rmdir()

    def _link_local(self, spec: ConnectionSpec, target: Path) -> None:
        local = Path(spec.connection)
        if not local.is_dir():
            raise StorageServerValidationError(f"{local} does not exist or is not a directory")
        if not os.access(local, os.R_OK | os.W_OK | os.X_OK):
            raise StorageServerAccessPermissionError(f"no read/write access to {local}")
        if target.is_symlink():
            if Path(os.readlink(target)) == local:
                return
            target.unlink()
        target.symlink_to(local)

    def _mount(self, spec: ConnectionSpec, target: Path) -> None:
        if os.path.ismount(target):
            return  # idempotent: already connected
        target.mkdir(exist_ok=True)
        vfs = spec.vfs_type or "nfs"
        argv = ["mount", "-t", vfs]
        options = spec.mount_options()
        if options:
            argv += ["-o", ",".join(options)]
        argv += ["--", spec.connection, str(target)]
        try:
            self._run(argv, "mount")
        except MountError:
            target.rmdir()
            raise

    def _run(self, argv: list[str], what: str) -> None:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=self.mount_timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise StorageServerConnectionError(f"{what} timed out: {argv[-2]}") from None
        if proc.returncode != 0:
            raise MountError(f"cannot {what} {argv[-2]}: {proc.stderr.strip()}")
