"""Domain metadata seal (VDSM's _SHA_CKSUM) and volume metadata format."""

from __future__ import annotations

import hashlib

import pytest

from storage import constants as sc
from storage.metadata import (
    VolumeMetadata,
    dump_domain_metadata,
    parse_domain_metadata,
    write_atomically,
)
from vdsm_py.errors import InvalidMetadata, MetaDataSealIsBroken, VolumeMetadataReadError

MD = {"SDUUID": "x", "VERSION": "5", "DESCRIPTION": "a=b c"}


def test_checksum_is_sha1_of_sorted_lines_without_newlines():
    text = dump_domain_metadata(MD).decode()
    lines = text.splitlines()
    assert lines[:3] == ["DESCRIPTION=a=b c", "SDUUID=x", "VERSION=5"]
    expected = hashlib.sha1(b"DESCRIPTION=a=b cSDUUID=xVERSION=5").hexdigest()
    assert lines[3] == f"_SHA_CKSUM={expected}"


def test_round_trip_and_nul_padding_from_direct_read():
    data = dump_domain_metadata(MD) + b"\0" * 100
    assert parse_domain_metadata(data, "t") == MD


def test_flipped_byte_breaks_the_seal():
    data = dump_domain_metadata(MD).replace(b"VERSION=5", b"VERSION=4")
    with pytest.raises(MetaDataSealIsBroken) as err:
        parse_domain_metadata(data, "t")
    assert err.value.code == 752


def test_torn_file_without_checksum_is_refused():
    data = dump_domain_metadata(MD)
    torn = data[: data.index(b"_SHA_CKSUM")]
    with pytest.raises(InvalidMetadata) as err:
        parse_domain_metadata(torn, "t")
    assert err.value.code == 751


@pytest.mark.parametrize("data", [b"", b"\0" * 512, b"\xff\xfe", b"garbage line\n"])
def test_empty_binary_or_garbage_metadata_is_invalid(data):
    with pytest.raises(InvalidMetadata):
        parse_domain_metadata(data, "t")


def test_newline_in_value_is_refused_before_writing():
    with pytest.raises(ValueError):
        dump_domain_metadata({"DESCRIPTION": "a\nSDUUID=evil"})


def test_write_atomically_leaves_no_temp_file(tmp_path):
    target = tmp_path / "metadata"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata"]


def _vmd(**kw):
    base = {"domain": "d", "image": "i", "parent": sc.BLANK_UUID, "capacity": 1048576, "format": "COW",
                "type": "SPARSE", "voltype": "LEAF", "disktype": "DATA", "description": "desc",
                "legality": "LEGAL", "ctime": 1700000000, "generation": 0, "sequence": 2}
    base.update(kw)
    return VolumeMetadata(**base)


def test_volume_metadata_is_vdsm_v5_format():
    text = _vmd().dump().decode()
    assert text.endswith("EOF\n")
    keys = [line.split("=")[0] for line in text.splitlines()[:-1]]
    assert keys == sorted(keys)
    assert "CAP=1048576" in text and "SEQ=2" in text and "PUUID=" + sc.BLANK_UUID in text


def test_volume_metadata_round_trip():
    md = _vmd()
    assert VolumeMetadata.parse(md.dump(), "v") == md


def test_volume_metadata_without_eof_is_torn():
    data = _vmd().dump()
    with pytest.raises(VolumeMetadataReadError, match="torn"):
        VolumeMetadata.parse(data[: len(data) // 2], "v")


def test_volume_metadata_missing_key_is_error_207():
    data = b"".join(l + b"\n" for l in _vmd().dump().splitlines() if not l.startswith(b"CAP="))
    with pytest.raises(VolumeMetadataReadError) as err:
        VolumeMetadata.parse(data, "v")
    assert err.value.code == 207


def test_volume_metadata_too_long_is_refused():
    with pytest.raises(ValueError):
        _vmd(description="x" * 210, disktype="D" * 400).dump()
