"""File domain layout, metadata verification and bad input (no sanlock: unit level)."""

from __future__ import annotations

import os
import uuid

import pytest

from storage import constants as sc
from storage import xleases
from storage.domain import DomainSpec, FileStorageDomain
from storage.validation import check_uuid
from vdsm_py.errors import (
    InvalidMetadata,
    InvalidParameter,
    MetaDataSealIsBroken,
    NoSuchLease,
    StorageDomainAlreadyExists,
    StorageDomainCreationError,
    StorageDomainMetadataNotFound,
    UnsupportedDomainVersion,
)

SD = "3f4a1c2e-1111-4c1e-9a53-0d1f2c3b4a5d"


def make(tmp_path, **kw) -> FileStorageDomain:
    spec = DomainSpec(sd_uuid=SD, name="data1", storage_type=sc.LOCALFS_DOMAIN,
                      remote_path=str(tmp_path), **kw)
    return FileStorageDomain.create(tmp_path, spec, io_timeout=1)


def test_create_lays_out_vdsm_tree(tmp_path):
    dom = make(tmp_path)
    md_dir = tmp_path / SD / "dom_md"
    assert sorted(os.listdir(md_dir)) == sorted(sc.SPECIAL_VOLUMES)
    assert (tmp_path / SD / "images").is_dir()
    assert (md_dir / "inbox").stat().st_size == 16 * sc.MiB
    assert (md_dir / "metadata").stat().st_mode & 0o777 == 0o660
    md = dom.metadata()
    assert md["SDUUID"] == SD and md["VERSION"] == "5" and md["CLASS"] == "Data"
    assert md["TYPE"] == "LOCALFS" and md["ROLE"] == "Regular" and md["POOL_UUID"] == ""
    assert md["ALIGNMENT"] == str(sc.MiB) and md["BLOCK_SIZE"] == "512"
    assert md["LEASETIMESEC"] == "60" and md["IOOPTIMEOUTSEC"] == "10"
    assert sorted(os.listdir(tmp_path)) == [SD]  # no staging directory left


def test_info_and_stats_are_in_vdsm_shape(tmp_path):
    dom = make(tmp_path)
    info = dom.info()
    assert info["uuid"] == SD and info["name"] == "data1" and info["pool"] == []
    assert info["class"] == "Data" and info["version"] == "5"
    stats = dom.stats()
    assert int(stats["disktotal"]) >= int(stats["diskfree"]) > 0


def test_create_twice_is_refused_and_leaves_the_first(tmp_path):
    make(tmp_path)
    before = (tmp_path / SD / "dom_md" / "metadata").read_bytes()
    with pytest.raises(StorageDomainAlreadyExists) as err:
        make(tmp_path)
    assert err.value.code == 365
    assert (tmp_path / SD / "dom_md" / "metadata").read_bytes() == before


@pytest.mark.parametrize("kw,error", [
    ({"version": 3}, UnsupportedDomainVersion),
    ({"block_size": 1024}, InvalidParameter),
    ({"domain_class": 9}, InvalidParameter),
])
def test_bad_spec_touches_nothing(tmp_path, kw, error):
    with pytest.raises(error):
        make(tmp_path, **kw)
    assert os.listdir(tmp_path) == []


def test_failure_mid_create_leaves_nothing(tmp_path):
    def broken_locks(*_args):
        raise OSError(5, "Input/output error")
    spec = DomainSpec(SD, "d", sc.LOCALFS_DOMAIN, str(tmp_path))
    with pytest.raises(StorageDomainCreationError):
        FileStorageDomain.create(tmp_path, spec, io_timeout=1, locks_factory=broken_locks)
    assert os.listdir(tmp_path) == []


def test_corrupted_metadata_is_reported_never_trusted(tmp_path):
    dom = make(tmp_path)
    path = dom.metadata_path
    path.write_bytes(path.read_bytes().replace(b"data1", b"data2"))
    with pytest.raises(MetaDataSealIsBroken):
        dom.info()
    with pytest.raises(MetaDataSealIsBroken):
        dom.stats()


def test_missing_metadata_is_364(tmp_path):
    dom = make(tmp_path)
    dom.metadata_path.unlink()
    with pytest.raises(StorageDomainMetadataNotFound) as err:
        dom.metadata()
    assert err.value.code == 364


def test_metadata_of_another_domain_is_invalid(tmp_path):
    make(tmp_path)
    other = FileStorageDomain(tmp_path / SD, str(uuid.uuid4()))
    with pytest.raises(InvalidMetadata):
        other.metadata()


def test_update_metadata_reseals(tmp_path):
    dom = make(tmp_path)
    dom.update_metadata({"POOL_UUID": "abc", "DESCRIPTION": None})
    md = dom.metadata()
    assert md["POOL_UUID"] == "abc" and "DESCRIPTION" not in md


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "3F4A1C2E-1111-4C1E-9A53-0D1F2C3B4A5D",
                                 "3f4a1c2e11114c1e9a530d1f2c3b4a5d", 5, None])
def test_non_uuid_identifiers_are_invalid_parameters(bad):
    with pytest.raises(InvalidParameter) as err:
        check_uuid("sdUUID", bad)
    assert err.value.code == 91


def test_xleases_index_is_formatted_in_vdsm_format(tmp_path):
    dom = make(tmp_path)
    path = dom.md_dir / sc.XLEASES
    with open(path, "rb") as f:
        f.seek(sc.MiB)
        header = f.read(512)
    assert header[:4] == (0x12152016).to_bytes(4, "big")
    assert header[5:9] == b"0001" and header[10:10 + len(SD)] == SD.encode()
    vol = xleases.LeasesVolume(path, SD, sc.MiB)
    assert vol.leases() == {}
    written = []
    info = vol.add("vm-lease-1", written.append)
    assert info.offset == 3 * sc.MiB and written == [info]
    assert vol.lookup("vm-lease-1") == info
    assert vol.add("vm-lease-2", written.append).offset == 4 * sc.MiB
    vol.remove("vm-lease-1")
    with pytest.raises(NoSuchLease):
        vol.lookup("vm-lease-1")
    assert vol.add("vm-lease-3", written.append).offset == 3 * sc.MiB  # slot reused


def test_xleases_record_not_written_when_resource_write_fails(tmp_path):
    dom = make(tmp_path)
    vol = xleases.LeasesVolume(dom.md_dir / sc.XLEASES, SD, sc.MiB)

    def fail(_info):
        raise OSError(5, "EIO")
    with pytest.raises(OSError):
        vol.add("vm", fail)
    assert vol.leases() == {}
