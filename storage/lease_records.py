"""The bytes of a new, free sanlock resource lease, made in Python for a file we write.

A resource (paxos) lease of ``align`` bytes starts with two records, one per sector: the
*leader record* (magic, version, an align flag, sector size, host counts, the lockspace and
resource names, no owner, timestamp 0, sealed by a CRC-32C of its first 168 bytes, seed
``~1`` and no final inversion) and the *request record* (magic, version, lver 0,
force_mode 0); everything else - the hosts' ballot blocks - is zeros. That is what
sanlock's ``paxos_lease_init`` writes for ``write_resource`` and ``sanlock direct init``,
little-endian on disk (sanlock 3.x, leader version 6.4, request version 1.1). The only
bytes sanlock writes that are not here are the 4 of padding that end its request record
struct: it copies them from an uninitialised stack variable and never reads them (zeros
here). ``tests/integration/test_storage_sanlock.py`` compares every other byte with what
a real sanlock daemon writes (sectors of 512 bytes with 1 MiB alignment, of 4 KiB with 1 and
8 MiB) and acquires such a lease.

Used for a volume's lease, formatted into a file nobody can use yet (see
:mod:`storage.unnamed`): the records written at the lease's start, the rest left a hole
(it reads as zeros), one small write instead of sanlock's 1 MiB or more. Pure: no I/O.
"""

from __future__ import annotations

import struct

from storage import constants as sc

NAME_SIZE = 48  # sanlock's NAME_ID_SIZE: names are NUL-padded, not NUL-terminated
PAXOS_MAGIC, PAXOS_VERSION = 0x06152010, 0x00060004
REQUEST_MAGIC, REQUEST_VERSION = 0x08292011, 0x00010001
CHECKSUM_LENGTH = 168  # the leader record's bytes before its checksum field

# magic, version, flags, sector_size, num_hosts, max_hosts, owner_id, owner_generation,
# lver, space_name, resource_name, timestamp, unused1, checksum, unused2, io_timeout,
# write_id, write_generation, write_timestamp
LEADER = struct.Struct("<IIIIQQQQQ48s48sQQIHHQQQ")
CHECKSUM_FIELD = 13
# magic, version, lver, force_mode
REQUEST = struct.Struct("<IIQI")
# sanlock writes its request record as the C struct: 4 bytes of padding after these fields,
# which it never reads (and leaves uninitialised); zeros here
REQUEST_STRUCT_SIZE = 24

# (sector size, alignment) -> hosts a lease has room for; the geometries sanlock accepts
MAX_HOSTS = {
    (sc.BLOCK_SIZE_512, 1 << 20): 2000,
    (4096, 1 << 20): 250,
    (4096, 2 << 20): 500,
    (4096, 4 << 20): 1000,
    (4096, 8 << 20): 2000,
}
ALIGN_FLAGS = {1 << 20: 0x10, 2 << 20: 0x20, 4 << 20: 0x40, 8 << 20: 0x80}


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # reflected Castagnoli
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(seed: int, data: bytes) -> int:
    """sanlock's CRC-32C: ``seed`` in, no final inversion."""
    crc = seed
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def free_lease_head(lockspace: str, resource: str, *, sector: int, align: int) -> bytes:
    """The first two sectors of a free lease of ``resource`` in ``lockspace``; the lease's
    other ``align - 2 * sector`` bytes are zeros. ValueError for a geometry or a name
    sanlock would refuse."""
    max_hosts = MAX_HOSTS.get((sector, align))
    if max_hosts is None:
        raise ValueError(f"no sanlock lease geometry for sector {sector}, align {align}")
    names = []
    for name in (lockspace, resource):
        raw = name.encode()
        if not raw or len(raw) > NAME_SIZE or b"\0" in raw:
            raise ValueError(f"not a sanlock name: {name!r}")
        names.append(raw)
    fields: list[int | bytes] = [PAXOS_MAGIC, PAXOS_VERSION, ALIGN_FLAGS[align], sector,
                                 max_hosts, max_hosts, 0, 0, 0, *names, 0, 0, 0, 0, 0, 0, 0, 0]
    fields[CHECKSUM_FIELD] = crc32c(0xFFFFFFFE, LEADER.pack(*fields)[:CHECKSUM_LENGTH])
    leader = LEADER.pack(*fields)
    request = REQUEST.pack(REQUEST_MAGIC, REQUEST_VERSION, 0, 0)
    return leader.ljust(sector, b"\0") + request.ljust(sector, b"\0")
