"""The free sanlock lease written in Python (storage.lease_records): its layout and seal.
Equality with what the real sanlock daemon writes is pinned by
tests/integration/test_storage_sanlock.py."""

from __future__ import annotations

import pytest

from storage import lease_records as lr

SD = "a1b2c3d4-7777-4a1e-8a53-0d1f2c3b4a5d"
VOL = "c3d4e5f6-9999-4c30-8c75-2f3b4e5d6c7f"


def test_crc32c_is_castagnoli_seeded_without_final_inversion():
    # the standard check value of CRC-32C (seed ~0, final inversion) for "123456789"
    assert lr.crc32c(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xE3069283
    assert lr.crc32c(0xFFFFFFFE, b"") == 0xFFFFFFFE


@pytest.mark.parametrize("sector, align, hosts, flag", [
    (512, 1 << 20, 2000, 0x10), (4096, 1 << 20, 250, 0x10), (4096, 2 << 20, 500, 0x20),
    (4096, 4 << 20, 1000, 0x40), (4096, 8 << 20, 2000, 0x80)])
def test_a_free_lease_head_is_a_sealed_leader_and_an_empty_request(sector, align, hosts, flag):
    head = lr.free_lease_head(SD, VOL, sector=sector, align=align)
    assert len(head) == 2 * sector
    fields = lr.LEADER.unpack_from(head)
    assert fields[:9] == (lr.PAXOS_MAGIC, lr.PAXOS_VERSION, flag, sector, hosts, hosts, 0, 0, 0)
    assert fields[9].rstrip(b"\0") == SD.encode() and fields[10].rstrip(b"\0") == VOL.encode()
    assert fields[11] == 0  # timestamp: free
    assert fields[lr.CHECKSUM_FIELD] == lr.crc32c(0xFFFFFFFE, head[:lr.CHECKSUM_LENGTH])
    assert not any(head[lr.LEADER.size:sector])
    assert lr.REQUEST.unpack_from(head, sector) == (lr.REQUEST_MAGIC, lr.REQUEST_VERSION, 0, 0)
    assert not any(head[sector + lr.REQUEST.size:])


def test_the_seal_covers_the_names():
    one = lr.free_lease_head(SD, VOL, sector=512, align=1 << 20)
    other = lr.free_lease_head(SD, VOL[:-1] + "0", sector=512, align=1 << 20)
    assert lr.LEADER.unpack_from(one)[lr.CHECKSUM_FIELD] != \
        lr.LEADER.unpack_from(other)[lr.CHECKSUM_FIELD]


@pytest.mark.parametrize("lockspace, name, sector, align", [
    (SD, VOL, 512, 2 << 20),  # a geometry sanlock has no host count for
    (SD, VOL, 1024, 1 << 20),
    (SD, "x" * 49, 512, 1 << 20),  # longer than sanlock's names
    (SD, "", 512, 1 << 20),
    ("a\0b", VOL, 512, 1 << 20),
])
def test_what_sanlock_would_refuse_is_refused(lockspace, name, sector, align):
    with pytest.raises(ValueError):
        lr.free_lease_head(lockspace, name, sector=sector, align=align)
