"""StorageDomain.format on real file domains: refusals and complete removal."""

from __future__ import annotations

import os

import pytest

from storage import constants as sc
from storage.domain import DomainSpec, FileStorageDomain
from vdsm_py.errors import CannotFormatAttachedStorageDomain

SD = "5b0c7d7e-2222-4b1e-8a53-0d1f2c3b4a5d"
POOL = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def dom(tmp_path) -> FileStorageDomain:
    return FileStorageDomain.create(tmp_path, DomainSpec(SD, "d", sc.LOCALFS_DOMAIN,
                                                         str(tmp_path)), io_timeout=1)


def test_format_removes_every_file_of_the_domain(dom, tmp_path):
    (dom.images_dir / "x").mkdir()
    (dom.images_dir / "x" / "data").write_bytes(b"1" * 4096)
    dom.format()
    assert os.listdir(tmp_path) == []


def test_format_refuses_an_attached_domain_unless_auto_detach(dom, tmp_path):
    dom.update_metadata({sc.DMDK_POOLS: POOL})
    with pytest.raises(CannotFormatAttachedStorageDomain):
        dom.format()
    assert dom.metadata()[sc.DMDK_POOLS] == POOL
    dom.format(auto_detach=True)
    assert os.listdir(tmp_path) == []


def test_format_accepts_a_domain_with_broken_metadata(dom, tmp_path):
    dom.metadata_path.write_bytes(b"garbage without a seal\n")
    dom.format()
    assert os.listdir(tmp_path) == []
