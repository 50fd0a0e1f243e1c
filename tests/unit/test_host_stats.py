"""Host statistics: real psutil samples, a fake clock and an injected sleep drive sampling
deterministically; the rate arithmetic is pinned on hand-made samples."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from vdsm_py.errors import ResourceUnavailable
from vdsm_py.executor import Executor
from vdsm_py.host.sample import (
    CpuTimes,
    DiskCounters,
    HostSample,
    MemoryLevels,
    NicCounters,
)
from vdsm_py.host.stats import HostStatsSampler, build_report

MiB = 1024 * 1024


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SteppedSleep:
    """An injected ``sleep`` that returns only when the test says so."""

    def __init__(self):
        self.requested: list[float] = []
        self._ticks: asyncio.Queue[None] = asyncio.Queue()
        self.waiting = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        self.waiting.set()
        await self._ticks.get()
        self.waiting.clear()

    async def tick(self) -> None:
        """Let the sampler's sleep return, then wait until it sleeps again."""
        self.waiting.clear()
        self._ticks.put_nowait(None)
        await asyncio.wait_for(self.waiting.wait(), 10)


@pytest.fixture
def executor():
    ex = Executor(workers=2, default_timeout=10.0, name="stats-test")
    yield ex
    ex.close()


@pytest.fixture
async def sampler(executor):
    clock = FakeClock()
    sleep = SteppedSleep()
    s = HostStatsSampler(executor, interval=15.0, clock=clock, sleep=sleep)
    s.fake_clock, s.fake_sleep = clock, sleep
    yield s
    await s.stop()


def loopback_traffic(nbytes: int) -> None:
    """Push ``nbytes`` through the loopback interface over TCP."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        received = []

        def drain():
            conn, _ = server.accept()
            with conn:
                total = 0
                while total < nbytes:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    total += len(chunk)
                received.append(total)

        t = threading.Thread(target=drain)
        t.start()
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"x" * nbytes)
        t.join(10)
    assert received == [nbytes]


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


# -- sampler with real psutil data ----------------------------------------------------------


async def test_report_before_start_is_resource_unavailable(executor):
    s = HostStatsSampler(executor, interval=15.0)
    with pytest.raises(ResourceUnavailable, match="not sampled yet"):
        s.report()


async def test_start_takes_a_first_sample_so_stats_work_at_once(sampler):
    await sampler.start()
    assert len(sampler.samples) == 1
    stats = sampler.report()
    assert stats["sampleInterval"] == 0
    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuIdle"]) == ("0.00", "0.00", "100.00")
    (only,) = sampler.samples
    for name, nic in stats["network"].items():
        assert nic["rxBytesPerSec"] == 0 and nic["rxRate"] == "0.0"
        assert nic["rx"] == str(only.nics[name].rx_bytes)
    for disk in stats["disks"].values():
        assert disk["readBytesPerSec"] == 0 and disk["writeBytesPerSec"] == 0
    assert "lo" in stats["network"]
    assert stats["swapTotal"] == only.memory.swap_total // MiB


async def test_rates_come_from_the_last_two_samples_over_the_clock_interval(sampler):
    await sampler.start()
    loopback_traffic(2 * MiB)
    burn_cpu(0.2)
    sampler.fake_clock.now += 10.0
    await sampler.sample_now()
    first, last = sampler.samples
    stats = sampler.report()
    assert stats["sampleInterval"] == 10.0

    lo = stats["network"]["lo"]
    expected_rx = (last.nics["lo"].rx_bytes - first.nics["lo"].rx_bytes) / 10.0
    assert lo["rxBytesPerSec"] == expected_rx
    assert lo["rxBytesPerSec"] >= 2 * MiB / 10.0  # the traffic we made is in there
    link = int(lo["speed"]) * 1_000_000 / 8
    assert lo["rxRate"] == f"{100.0 * expected_rx / link:.1f}"
    for name, disk in stats["disks"].items():
        grown = last.disks[name].write_bytes - first.disks[name].write_bytes
        assert disk["writeBytesPerSec"] == max(0, grown) / 10.0

    user, system = float(stats["cpuUser"]), float(stats["cpuSys"])
    total = last.cpu.total - first.cpu.total
    assert user == pytest.approx(100 * (last.cpu.user - first.cpu.user) / total, abs=0.006)
    assert user + system > 0  # we burnt CPU between the samples
    assert user + system + float(stats["cpuIdle"]) == pytest.approx(100, abs=0.02)


async def test_memory_load_and_uptime_come_from_the_last_sample(sampler):
    await sampler.start()
    sampler.fake_clock.now += 15.0
    await sampler.sample_now()
    last = sampler.samples[-1]
    stats = sampler.report()
    assert stats["memFree"] == last.memory.free // MiB
    assert stats["memAvailable"] == last.memory.available // MiB
    assert stats["memCommitted"] == last.memory.committed // MiB > 0
    assert 0 <= int(stats["memUsed"]) <= 100
    assert stats["cpuLoad"] == f"{last.load[1]:.2f}"
    assert stats["loadAverage"] == list(last.load)
    assert int(stats["bootTime"]) == int(last.boot_time) < time.time()
    assert stats["elapsedTime"] == "15"
    assert set(stats["diskStats"]) <= {"/tmp", "/var/log"}
    assert set(stats["cpuStatistics"]) == {str(i) for i in sampler._cpu_ids}


async def test_loop_samples_every_interval_and_keeps_two(sampler):
    await sampler.start()
    sleep = sampler.fake_sleep
    await asyncio.wait_for(sleep.waiting.wait(), 10)
    assert sleep.requested == [15.0]
    stamps = [sampler.samples[-1].monotonic]
    for _ in range(3):
        sampler.fake_clock.now += 15.0
        await sleep.tick()
        stamps.append(sampler.samples[-1].monotonic)
    assert sleep.requested == [15.0] * 4
    assert stamps == [1000.0, 1015.0, 1030.0, 1045.0]
    assert [s.monotonic for s in sampler.samples] == [1030.0, 1045.0]
    assert sampler.report()["sampleInterval"] == 15.0


async def test_failed_sample_keeps_the_previous_ones_and_the_loop_goes_on(
        sampler, executor, caplog):
    await sampler.start()
    await asyncio.wait_for(sampler.fake_sleep.waiting.wait(), 10)
    before = sampler.samples
    executor.close()  # the next sample cannot run: a real failure of the worker pool
    sampler.fake_clock.now += 15.0
    await sampler.fake_sleep.tick()
    assert sampler.samples == before
    assert sampler.report()["sampleInterval"] == 0
    assert "sample failed" in caplog.text
    assert len(sampler.fake_sleep.requested) == 2  # still sampling


async def test_stop_ends_the_loop_and_is_idempotent(sampler):
    await sampler.start()
    task = sampler._task
    await sampler.stop()
    assert task.done()
    await sampler.stop()


def test_interval_must_be_positive(executor):
    with pytest.raises(ValueError, match="positive"):
        HostStatsSampler(executor, interval=0)


# -- the arithmetic on hand-made samples ------------------------------------------------------


def nic(rx: int, tx: int = 0, *, speed: int = 0, up: bool = True, dropped=(0, 0)):
    return NicCounters(rx, tx, 0, 0, dropped[0], dropped[1], up, speed, "full")


def sample(t: float, *, cpu=(0.0, 0.0, 0.0), nics=None, disks=None, mem=None,
           wall: float = 1_700_000_000.0) -> HostSample:
    return HostSample(
        monotonic=t,
        wall_time=wall + t,
        cpu=CpuTimes(*cpu),
        per_cpu=(CpuTimes(*cpu),),
        memory=mem or MemoryLevels(1000 * MiB, 250 * MiB, 400 * MiB, 600 * MiB,
                                   64 * MiB, 32 * MiB),
        load=(0.5, 1.25, 2.0),
        nics=nics or {},
        disks=disks or {},
        path_free_mib={"/tmp": 77},
        boot_time=1_600_000_000.9,
    )


def test_cpu_percentages_are_shares_of_all_cpu_time():
    first = sample(0, cpu=(100.0, 50.0, 1000.0))
    last = sample(10, cpu=(130.0, 60.0, 1100.0))  # 30 user, 10 system of 100
    stats = build_report(first, last, elapsed=5, cpu_ids=[3], cpu_nodes={3: 1})
    assert (stats["cpuUser"], stats["cpuSys"], stats["cpuIdle"]) == \
        ("30.00", "10.00", "60.00")
    assert stats["cpuStatistics"] == {
        "3": {"nodeIndex": 1, "cpuUser": "30.00", "cpuSys": "10.00", "cpuIdle": "60.00"}}


def test_nic_rates_in_bytes_per_second_and_percent_of_link_speed():
    first = sample(0, nics={"eth0": nic(1_000, 500, speed=100)})
    last = sample(4, nics={"eth0": nic(5_001_000, 1_000_500, speed=100)})
    eth0 = build_report(first, last, elapsed=4)["network"]["eth0"]
    assert eth0["rxBytesPerSec"] == 1_250_000.0  # 10 Mb/s of a 100 Mb/s link
    assert eth0["txBytesPerSec"] == 250_000.0
    assert (eth0["rxRate"], eth0["txRate"]) == ("10.0", "2.0")
    assert (eth0["rx"], eth0["tx"], eth0["speed"]) == ("5001000", "1000500", "100")
    assert eth0["state"] == "up" and eth0["duplex"] == "full"
    assert eth0["sampleTime"] == last.wall_time


def test_unknown_link_speed_counts_as_1000_as_vdsm():
    first = sample(0, nics={"veth1": nic(0)})
    last = sample(1, nics={"veth1": nic(12_500_000)})
    veth = build_report(first, last, elapsed=1)["network"]["veth1"]
    assert veth["speed"] == "1000" and veth["rxRate"] == "10.0"


def test_counter_reset_and_new_devices_give_zero_rates():
    first = sample(0, nics={"eth0": nic(9_000)}, disks={"vda": DiskCounters(10, 10, 1, 1)})
    last = sample(5, nics={"eth0": nic(100), "eth1": nic(7_000)},
                  disks={"vda": DiskCounters(5, 60, 2, 6), "vdb": DiskCounters(9, 9, 9, 9)})
    stats = build_report(first, last, elapsed=5)
    assert stats["network"]["eth0"]["rxBytesPerSec"] == 0  # re-created interface
    assert stats["network"]["eth1"]["rxBytesPerSec"] == 0  # appeared meanwhile
    vda = stats["disks"]["vda"]
    assert (vda["readBytesPerSec"], vda["writeBytesPerSec"]) == (0, 10.0)
    assert (vda["readOpsPerSec"], vda["writeOpsPerSec"]) == (0.2, 1.0)
    assert stats["disks"]["vdb"]["readBytesPerSec"] == 0


def test_samples_at_the_same_instant_count_as_a_single_sample():
    first = sample(3, cpu=(1.0, 1.0, 10.0), nics={"lo": nic(0)})
    last = sample(3, cpu=(5.0, 1.0, 20.0), nics={"lo": nic(10_000)})
    stats = build_report(first, last, elapsed=0)
    assert stats["sampleInterval"] == 0 and stats["cpuIdle"] == "100.00"
    assert stats["network"]["lo"]["rxBytesPerSec"] == 0


def test_memory_swap_and_totals_in_vdsm_units():
    nics = {"a": nic(0, dropped=(3, 4)), "b": nic(0, dropped=(5, 6))}
    stats = build_report(None, sample(0, nics=nics), elapsed=61.7)
    assert (stats["memFree"], stats["memAvailable"], stats["memCommitted"]) == (250, 400, 600)
    assert stats["memUsed"] == "75"
    assert (stats["swapTotal"], stats["swapFree"]) == (64, 32)
    assert (stats["rxDropped"], stats["txDropped"]) == ("8", "10")
    assert stats["cpuLoad"] == "1.25" and stats["loadAverage"] == [0.5, 1.25, 2.0]
    assert stats["bootTime"] == "1600000000" and stats["elapsedTime"] == "61"
    assert stats["diskStats"] == {"/tmp": {"free": "77"}}
    assert stats["dateTime"] == "2023-11-14T22:13:20 GMT"
