"""Volume data made in an unnamed file and given its name only when it is whole.

An :class:`UnnamedFile` is an ``O_TMPFILE`` in a directory of the domain: no name points to
it, so a crash (or :meth:`UnnamedFile.close` before :meth:`UnnamedFile.link`) leaves nothing
behind - the file system frees it, even after a power loss. That lets qemu-img start writing
a new volume's data *before* the SPM task that makes the volume has durably recorded that it
began (see :mod:`storage.tasks`, "preparers"): nothing anyone could find is touched until
the link, which the task's step does after the record. :class:`UnnamedVolume` is such a
started qemu-img and the volume's lease, formatted free (:mod:`storage.lease_records`: two
sectors written, the rest a hole), with their files, as a prepared step's handle.

File systems without ``O_TMPFILE`` (NFS...) give None: the caller makes the data the named
way. The link goes through ``/proc/self/fd`` (``linkat`` with ``AT_SYMLINK_FOLLOW``, allowed
without privileges), into any directory of the same file system. Blocking: call from workers.
Must not know volumes' metadata or tasks.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from storage import constants as sc
from storage import qemuimg

log = logging.getLogger("vdsm_py.storage.volume")

# O_TMPFILE refused: unsupported by the file system, or by the kernel (it then reads it as
# O_DIRECTORY, hence EISDIR)
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT})


class UnnamedFile:
    """An open, unnamed file in ``directory`` (see the module docstring)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    @classmethod
    def open(cls, directory: Path, mode: int) -> UnnamedFile | None:
        """A new unnamed file of ``mode`` (whatever the umask); None if not supported there."""
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                log.debug("no unnamed files in %s: %s", directory, exc.strerror)
                return None
            raise
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def link(self, path: Path) -> None:
        """Give the file its name ``path`` (which must not exist)."""
        if self.fd is None:
            raise ValueError("the unnamed file is closed")
        # a dir_fd makes os.link use linkat(2), which alone follows the /proc link
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(f"/proc/self/fd/{self.fd}", path.name, dst_dir_fd=dir_fd,
                    follow_symlinks=True)
        finally:
            os.close(dir_fd)

    def write_lease(self, head: bytes, size: int) -> None:
        """A free lease of ``size`` bytes at the volume lease offset: ``head`` (its first
        records) and zeros, a hole (not synced: :meth:`UnnamedVolume.place_lease` does)."""
        if self.fd is None:
            raise ValueError("the unnamed file is closed")
        if os.pwrite(self.fd, head, sc.VOLUME_LEASE_OFFSET) != len(head):
            raise OSError(errno.ENOSPC, "short write of a lease")
        os.ftruncate(self.fd, sc.VOLUME_LEASE_OFFSET + size)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


@dataclass
class UnnamedVolume:
    """A new volume's data (qemu-img) and lease (written, or None: the caller formats it
    the named way, through sanlock) being made in unnamed files: a prepared step's handle.
    """

    data: UnnamedFile
    running: qemuimg.Running
    lease: UnnamedFile | None = None

    def place_lease(self, path: Path) -> bool:
        """Sync the lease and link it as ``path``; False if there is none."""
        if self.lease is None or self.lease.fd is None:
            return False
        os.fsync(self.lease.fd)  # its data and its size
        self.lease.link(path)
        self.lease.close()
        return True

    def place_data(self, path: Path) -> None:
        """Once ``running`` ended well: link the finished image as ``path`` and close it."""
        self.data.link(path)
        self.data.close()

    def discard(self) -> None:
        """Stop what still runs and drop the files not placed (idempotent)."""
        try:
            self.running.kill()
        finally:
            self.data.close()
            if self.lease is not None:
                self.lease.close()
