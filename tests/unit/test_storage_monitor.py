"""The domain monitor on real files; a hung storage path is a real FIFO (open blocks)."""

from __future__ import annotations

import asyncio
import os

import pytest

from storage import constants as sc
from storage.domain import DomainSpec, FileStorageDomain
from storage.monitor import DomainMonitor
from vdsm_py.executor import Executor

SD1 = "aa11aa11-1111-4111-8111-111111111111"
SD2 = "bb22bb22-2222-4222-8222-222222222222"


@pytest.fixture
async def executor():
    ex = Executor(4, 30, name="monitor-test")
    yield ex
    ex.close()


def domain(tmp_path, sd) -> FileStorageDomain:
    return FileStorageDomain.create(tmp_path, DomainSpec(sd, "d", sc.LOCALFS_DOMAIN,
                                                         str(tmp_path)), io_timeout=1)


async def test_valid_domain_reports_delay_version_and_last_check(tmp_path, executor):
    dom = domain(tmp_path, SD1)
    now = [100.0]
    mon = DomainMonitor(executor, interval=3600, check_timeout=10, clock=lambda: now[0])
    mon.start_monitoring(SD1, dom.metadata_path)
    try:
        status = await mon.check_once(SD1)
        assert status.valid and status.version == 5 and status.code == 0
        now[0] += 2.5
        stats = mon.repo_stats()[SD1]
        assert stats["valid"] is True and stats["lastCheck"] == "2.5"
        assert float(stats["delay"]) >= 0 and stats["acquired"] is False
    finally:
        await mon.stop()
    assert mon.repo_stats() == {}


async def test_corrupted_metadata_turns_domain_invalid(tmp_path, executor):
    dom = domain(tmp_path, SD1)
    mon = DomainMonitor(executor, interval=3600)
    mon.start_monitoring(SD1, dom.metadata_path)
    try:
        assert (await mon.check_once(SD1)).valid
        data = dom.metadata_path.read_bytes()
        dom.metadata_path.write_bytes(data.replace(b"VERSION=5", b"VERSION=6"))
        status = await mon.check_once(SD1)
        assert not status.valid and status.code == 752
        dom.metadata_path.write_bytes(data)
        assert (await mon.check_once(SD1)).valid
    finally:
        await mon.stop()


async def test_hung_path_never_blocks_other_domains_or_the_loop(tmp_path, executor):
    good = domain(tmp_path, SD1)
    hung = tmp_path / "hung-metadata"
    os.mkfifo(hung)  # opening it for reading blocks until a writer comes: a real hang
    mon = DomainMonitor(executor, interval=0.05, check_timeout=0.3)
    mon.start_monitoring(SD2, hung)
    mon.start_monitoring(SD1, good.metadata_path)
    try:
        for _ in range(200):  # liveness bound only: ~10 s
            await asyncio.sleep(0.05)
            stats = mon.repo_stats()
            if stats[SD1]["valid"] and stats[SD2]["code"] == 379:
                break
        assert stats[SD1]["valid"] is True
        assert stats[SD2]["valid"] is False and stats[SD2]["code"] == 379
        checked_before = mon.status(SD1).checked_at
        await asyncio.sleep(0.5)
        assert mon.status(SD1).checked_at != checked_before  # still being checked
        # only one stuck check for the hung domain, however many intervals pass
        assert executor.stats()["written_off"] == 1
    finally:
        await mon.stop()
        fd = os.open(hung, os.O_WRONLY | os.O_NONBLOCK)  # release the stuck reader
        os.close(fd)
