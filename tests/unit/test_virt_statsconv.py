"""From two bulk samples to VDSM's stats fields: percentages, rates, counters."""

from __future__ import annotations

from vdsm_py.virt import statsconv
from vdsm_py.virt.domparse import DiskInfo, DomainInfo, NicInfo

INFO = DomainInfo(
    vm_id="u", name="vm", domain_type="kvm", machine="pc", mem_mib=1024,
    current_mem_kib=1024 * 1024, vcpus=2, acpi=True,
    nics=(NicInfo("00:1a:4a:00:00:01", "bridge", "ovirtmgmt", "virtio", "vnet7", "net0", True,
                  0, 3),),
    disks=(DiskInfo("vda", "disk", "/a.img", "virtio", "", "virtio-disk0", False),),
    balloon=True,
)


def sample(t: int, *, net_order=("vnet7",)) -> dict:
    s = {
        "cpu.time": 4_000_000_000 * t, "cpu.user": 2_500_000_000 * t,
        "cpu.system": 1_000_000_000 * t, "vcpu.current": 2,
        "net.count": len(net_order), "block.count": 1,
        "block.0.name": "vda", "block.0.rd.bytes": 1_000_000 * t, "block.0.wr.bytes": 500 * t,
        "block.0.rd.reqs": 100 * t, "block.0.rd.times": 5_000_000 * t,
        "block.0.wr.reqs": 0, "block.0.wr.times": 0, "block.0.capacity": 10 << 30,
        "block.0.physical": 1 << 30,
        "balloon.current": 1048576, "balloon.available": 1000000, "balloon.unused": 400000,
        "balloon.disk_caches": 100000, "balloon.major_fault": 10 * t,
        "balloon.minor_fault": 100 * t,
    }
    for i, name in enumerate(net_order):
        s[f"net.{i}.name"] = name
        if name == "vnet7":
            s.update({f"net.{i}.rx.bytes": 3000 * t, f"net.{i}.tx.bytes": 1500 * t,
                      f"net.{i}.rx.errs": 1, f"net.{i}.rx.drop": 2, f"net.{i}.tx.errs": 0,
                      f"net.{i}.tx.drop": 0})
    return s


def test_cpu_percentages_come_from_the_difference_between_samples():
    out = statsconv.cpu(sample(1), sample(3), 2.0)
    # 2 s of wall time: system grew 2e9 ns -> 100 %; total 8e9 - 2e9 sys -> 300 % user
    assert out == {"cpuUser": "300.00", "cpuSys": "100.00", "cpuUsage": str(3 * 3_500_000_000),
                   "cpuActual": True}


def test_first_sample_gives_zero_percentages_but_cumulative_usage():
    out = statsconv.cpu(None, sample(1), 0)
    assert out["cpuUser"] == "0.00" and not out["cpuActual"]
    assert out["cpuUsage"] == "3500000000"


def test_network_rates_follow_the_nic_even_when_libvirt_reorders_it():
    first = sample(1, net_order=("vnet7", "vnet9"))
    last = sample(5, net_order=("vnet9", "vnet7"))
    net = statsconv.networks(INFO, first, last, 4.0, 123.0)
    stats = net["vnet7"]
    assert stats["rx"] == "15000" and stats["tx"] == "7500"
    assert stats["rxRate"] == "3000.0" and stats["txRate"] == "1500.0"
    assert stats["macAddr"] == "00:1a:4a:00:00:01" and stats["network"] == "ovirtmgmt"
    assert (stats["rxErrors"], stats["rxDropped"], stats["sampleTime"]) == ("1", "2", 123.0)
    assert "vnet9" not in net  # not one of the VM's known NICs


def test_disk_rates_latencies_and_counters():
    disks = statsconv.disks(INFO, {"vda": {"imageID": "img"}}, sample(1), sample(3), 2.0)
    vda = disks["vda"]
    assert vda["readRate"] == "1000000.0" and vda["writeRate"] == "500.0"
    assert vda["readLatency"] == "50000" and vda["writeLatency"] == "0"
    assert vda["readBytes"] == "3000000" and vda["readOps"] == "300"
    assert vda["apparentsize"] == str(10 << 30) and vda["truesize"] == str(1 << 30)
    assert vda["imageID"] == "img"


def test_balloon_and_guest_memory_figures():
    out = statsconv.produce(INFO, {}, 512 * 1024, True, sample(1), sample(2), 1.0, 0.0)
    assert out["balloonInfo"] == {
        "balloon_max": str(1024 * 1024), "balloon_min": str(512 * 1024),
        "balloon_cur": "1048576", "balloon_target": str(1024 * 1024),
        "ballooning_enabled": True}
    mem = out["memoryStats"]
    assert mem["mem_free"] == "500000" and mem["majflt"] == 10 and mem["pageflt"] == 110
    assert out["memUsage"] == str(int(100 - 500000 / 1024 / 1024 * 100))
    assert out["vcpuCount"] == "2"


def test_a_sample_without_counters_yields_what_vdsm_yields():
    out = statsconv.produce(INFO, {}, 0, False, None, {"state.state": 1}, 0, 0.0)
    assert out["network"] == {} and out["disks"] == {} and out["balloonInfo"] == {}
    assert "memoryStats" not in out and out["vcpuCount"] == "2"
