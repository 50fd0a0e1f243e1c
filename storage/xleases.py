"""The external (VM) leases volume, ``dom_md/xleases``, in VDSM's index format.

Slots of ``alignment`` bytes: 0 lockspace (unused: the lockspace is in ``ids``), 1 the
index, 2 reserved for sanlock, 3.. the leases. The index starts with a 512-byte header
(magic 0x12152016, version, lockspace, mtime, updating flag) followed by 64-byte records
(resource name, offset, flags); record N maps to the lease at ``(3 + N) * alignment``, so
two records can never share a lease. Adding a lease writes the sanlock resource first and
the record second: a failure in between leaves the index unchanged.

Blocking file I/O and sanlock calls: run from the executor. Must not acquire leases.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vdsm_py.errors import InvalidMetadata, NoSuchLease, StorageError

log = logging.getLogger("vdsm_py.storage.xleases")

MAGIC = 0x12152016
VERSION = 1
RESERVED_SLOTS = 3
HEADER_SIZE = 512
RECORD_SIZE = 64
INDEX_SIZE = 62 * 4096
MAX_RECORDS = (INDEX_SIZE - HEADER_SIZE) // RECORD_SIZE
_HEADER = struct.Struct(">i x 4s x 48s x 10s x c 440x c")
_RECORD = struct.Struct("48s x 11s x 3c")
_NONE = b"-"
_UPDATING = b"u"
_TERM = b"\n"


@dataclass(frozen=True)
class LeaseInfo:
    lockspace: str
    resource: str
    path: Path
    offset: int

    def wire(self) -> dict[str, object]:
        return {"lockspace": self.lockspace, "resource": self.resource,
                "path": str(self.path), "offset": self.offset}


def lease_offset(recnum: int, alignment: int) -> int:
    return (RESERVED_SLOTS + recnum) * alignment


def _header(lockspace: str) -> bytes:
    return _HEADER.pack(MAGIC, b"%04d" % VERSION, lockspace.encode("ascii"),
                        b"%010d" % int(time.time()), _NONE, _TERM)


def _record(resource: str, offset: int) -> bytes:
    return _RECORD.pack(resource.encode("ascii"), b"%011d" % offset, _NONE, _NONE, _TERM)


EMPTY = _record("", 0)


def format_index(path: Path, lockspace: str, alignment: int) -> None:
    """Write an empty index (every record free) into ``path``."""
    index = _header(lockspace) + EMPTY * MAX_RECORDS
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, index, alignment)
        os.fsync(fd)
    finally:
        os.close(fd)


class LeasesVolume:
    """The index of one domain's ``xleases`` file."""

    def __init__(self, path: Path, lockspace: str, alignment: int):
        self.path = path
        self.lockspace = lockspace
        self.alignment = alignment

    def _read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.alignment)
            data = f.read(INDEX_SIZE)
        if len(data) < INDEX_SIZE:
            raise InvalidMetadata(f"xleases index of {self.lockspace} is truncated")
        magic, version, lockspace, _mtime, updating, _ = _HEADER.unpack(data[:HEADER_SIZE])
        if magic != MAGIC or int(version) != VERSION:
            raise InvalidMetadata(f"xleases index of {self.lockspace}: bad magic or version")
        if lockspace.rstrip(b"\0").decode("ascii", "replace") != self.lockspace:
            raise InvalidMetadata(f"xleases index belongs to {lockspace!r}")
        if updating == _UPDATING:
            raise InvalidMetadata(f"xleases index of {self.lockspace} was left updating")
        return data

    def _records(self, data: bytes) -> list[tuple[str, int]]:
        out = []
        for n in range(MAX_RECORDS):
            start = HEADER_SIZE + n * RECORD_SIZE
            resource, _offset, updating, _, _ = _RECORD.unpack(data[start:start + RECORD_SIZE])
            name = resource.rstrip(b"\0").decode("ascii", "replace")
            out.append(("" if updating == _UPDATING else name, n))
        return out

    def leases(self) -> dict[str, LeaseInfo]:
        data = self._read()
        return {name: self._info(name, n) for name, n in self._records(data) if name}

    def lookup(self, lease_id: str) -> LeaseInfo:
        lease = self.leases().get(lease_id)
        if lease is None:
            raise NoSuchLease(f"No such lease {lease_id} in domain {self.lockspace}")
        return lease

    def add(self, lease_id: str, write_resource: Callable[[LeaseInfo], None]) -> LeaseInfo:
        """Allocate a slot for ``lease_id``; ``write_resource`` formats the sanlock lease."""
        records = self._records(self._read())
        if any(name == lease_id for name, _ in records):
            raise StorageError(f"Lease {lease_id} exists in domain {self.lockspace}")
        free = next((n for name, n in records if not name), None)
        if free is None:
            raise StorageError(f"No space to add lease {lease_id} in domain {self.lockspace}")
        info = self._info(lease_id, free)
        write_resource(info)
        self._write_record(free, _record(lease_id, info.offset))
        log.info("added lease %s at %s:%d", lease_id, self.path, info.offset)
        return info

    def remove(self, lease_id: str) -> None:
        for name, n in self._records(self._read()):
            if name == lease_id:
                self._write_record(n, EMPTY)
                log.info("removed lease %s of %s", lease_id, self.lockspace)
                return
        raise NoSuchLease(f"No such lease {lease_id} in domain {self.lockspace}")

    def _info(self, name: str, recnum: int) -> LeaseInfo:
        return LeaseInfo(self.lockspace, name, self.path, lease_offset(recnum, self.alignment))

    def _write_record(self, recnum: int, record: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.pwrite(fd, record, self.alignment + HEADER_SIZE + recnum * RECORD_SIZE)
            os.fsync(fd)
        finally:
            os.close(fd)
