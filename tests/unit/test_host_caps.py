"""Host capabilities: VDSM's keys and types on the real machine, caching, and edge cases
read from small trees of real files (HostPaths)."""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from vdsm_py import __version__
from vdsm_py.host import osinfo
from vdsm_py.host.caps import SUPPORTED_ENGINES, HostCapabilities, cluster_levels
from vdsm_py.host.cpu import parse_cpu_list, read_cpuinfo, read_topology
from vdsm_py.host.host_uuid import UUID_FILE, host_uuid
from vdsm_py.host.numa import read_nodes
from vdsm_py.host.osinfo import PackageVersion, split_deb_version
from vdsm_py.host.paths import HostPaths

MiB = 1024 * 1024


class CountingRunner:
    """The real command runner, counting how often the daemon shells out."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        self.calls.append(argv)
        return osinfo.run_command(argv)


@pytest.fixture(scope="module")
def real_caps(tmp_path_factory):
    caps = HostCapabilities(state_dir=tmp_path_factory.mktemp("state"))
    return caps.report()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- the real machine -----------------------------------------------------------------


def test_counts_are_vdsm_style_numeric_strings(real_caps):
    for key in ("cpuCores", "cpuThreads", "cpuSockets", "memSize"):
        assert isinstance(real_caps[key], str) and real_caps[key].isdigit(), key
    assert int(real_caps["cpuThreads"]) == os.sysconf("SC_NPROCESSORS_ONLN")
    assert 1 <= int(real_caps["cpuSockets"]) <= int(real_caps["cpuCores"])
    assert int(real_caps["cpuCores"]) <= int(real_caps["cpuThreads"])
    assert float(real_caps["cpuSpeed"]) >= 0
    assert real_caps["memSize"] == str(psutil.virtual_memory().total // MiB)


def test_cpu_model_and_flags_come_from_proc_cpuinfo(real_caps):
    text = Path("/proc/cpuinfo").read_text()
    flags_line = re.search(r"^(flags|Features)\s*:(.*)$", text, re.MULTILINE)
    assert flags_line, "this test expects a /proc/cpuinfo with flags"
    assert real_caps["cpuFlags"].split(",") == flags_line.group(2).split()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    if model:
        assert real_caps["cpuModel"] == model.group(1).strip()


def test_online_cpus_and_topology_agree(real_caps):
    online = [int(c) for c in real_caps["onlineCpus"].split(",")]
    assert [c["cpu_id"] for c in real_caps["cpuTopology"]] == online
    assert len(online) == int(real_caps["cpuThreads"])
    node_cpus = sorted(c for n in real_caps["numaNodes"].values() for c in n["cpus"])
    assert node_cpus == online
    assert set(real_caps["numaNodeDistance"]) == set(real_caps["numaNodes"])


def test_kernel_and_os_are_reported_as_vdsm_does(real_caps):
    version, _, release = platform.release().partition("-")
    assert real_caps["packages2"]["kernel"] == {"version": version, "release": release}
    os_info = real_caps["operatingSystem"]
    assert set(os_info) >= {"name", "version", "release", "pretty_name"}
    if Path("/etc/debian_version").exists():
        assert os_info["name"] == "Debian"
        assert os_info["version"] == Path("/etc/debian_version").read_text().strip()
    assert real_caps["kernelArgs"] == Path("/proc/cmdline").read_text().strip()


def test_libvirt_version_matches_the_installed_library(real_caps):
    libvirt = pytest.importorskip("libvirt")
    number = libvirt.getVersion()
    reported = real_caps["packages2"]["libvirt"]["version"]
    assert reported.startswith(f"{number // 1_000_000}.{number // 1000 % 1000}")
    if number >= 8_000_000:
        assert "4.7" in real_caps["clusterLevels"]


def test_qemu_version_matches_the_installed_emulator(real_caps):
    binary = shutil.which("qemu-system-x86_64")
    if platform.machine() != "x86_64" or not binary:
        pytest.skip("no x86_64 QEMU here")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    major_minor = re.search(r"version (\d+\.\d+)", out).group(1)
    assert real_caps["packages2"]["qemu-kvm"]["version"].startswith(major_minor)


def test_software_versions_engines_uuid_and_hostname(real_caps):
    assert real_caps["software_version"] == __version__
    assert real_caps["packages2"]["vdsm"] == {"version": __version__, "release": ""}
    assert real_caps["supportedENGINEs"] == SUPPORTED_ENGINES
    assert real_caps["clusterLevels"][:5] == ["4.2", "4.3", "4.4", "4.5", "4.6"]
    uuid.UUID(real_caps["uuid"])
    assert real_caps["hostname"] == platform.node()
    assert real_caps["kvmEnabled"] == str(Path("/dev/kvm").exists()).lower()
    assert real_caps["hooks"] == {}


# -- caching and providers -------------------------------------------------------------


def test_static_part_is_computed_once_and_commands_run_once(tmp_path):
    runner = CountingRunner()
    caps = HostCapabilities(state_dir=tmp_path, run=runner)
    first = caps.report()
    calls_after_first = len(runner.calls)
    assert calls_after_first >= 1  # dpkg-query / rpm / qemu --version: at least one
    for _ in range(3):
        assert caps.report() == first
    assert len(runner.calls) == calls_after_first
    assert caps.static() is caps.static()


def test_report_is_a_copy_callers_cannot_corrupt_the_cache(tmp_path):
    caps = HostCapabilities(state_dir=tmp_path)
    report = caps.report()
    report["packages2"]["kernel"]["version"] = "tampered"
    report["cpuTopology"].clear()
    again = caps.report()
    assert again["packages2"]["kernel"]["version"] != "tampered"
    assert again["cpuTopology"]


def test_hooks_provider_is_asked_on_every_report(tmp_path):
    listings = iter([{}, {"before_vm_start": {"50_x": {"checksum": "ab"}}}])
    caps = HostCapabilities(state_dir=tmp_path, hooks=lambda: next(listings))
    assert caps.report()["hooks"] == {}
    assert caps.report()["hooks"] == {"before_vm_start": {"50_x": {"checksum": "ab"}}}


def test_failing_hooks_provider_reports_no_hooks_and_logs(tmp_path, caplog):
    def broken():
        raise OSError("hook dir gone")

    caps = HostCapabilities(state_dir=tmp_path, hooks=broken)
    with caplog.at_level(logging.ERROR, logger="vdsm_py.host"):
        assert caps.report()["hooks"] == {}
    assert "cannot list hooks" in caplog.text


def test_extra_cpu_flags_are_appended_once(tmp_path):
    own = read_cpuinfo(HostPaths()).flags
    extra = ["model_Westmere", "model_Nehalem", *own[:1]]
    caps = HostCapabilities(state_dir=tmp_path, extra_cpu_flags=lambda: extra)
    flags = caps.report()["cpuFlags"].split(",")
    assert flags[-2:] == ["model_Westmere", "model_Nehalem"]
    assert len(flags) == len(set(flags))


def test_failing_extra_cpu_flags_keep_the_cpuinfo_flags(tmp_path):
    def broken():
        raise RuntimeError("no libvirt")

    caps = HostCapabilities(state_dir=tmp_path, extra_cpu_flags=broken)
    assert caps.report()["cpuFlags"].split(",") == list(read_cpuinfo(HostPaths()).flags)


@pytest.mark.parametrize(
    "libvirt, qemu, top",
    [
        (None, None, "4.6"),
        (PackageVersion("7.10.0"), PackageVersion("6.2"), "4.6"),
        (PackageVersion("8.0.0"), PackageVersion("6.2"), "4.7"),
        (PackageVersion("10.10.0"), PackageVersion("9.0.0"), "4.7"),
        (PackageVersion("10.10.0"), PackageVersion("9.1.0"), "4.8"),
        (PackageVersion("11.0.0"), None, "4.7"),
    ],
)
def test_cluster_levels_follow_vdsm_rule(libvirt, qemu, top):
    assert cluster_levels(libvirt, qemu)[-1] == top


# -- package versions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "full, version, release",
    [
        ("1:7.2+dfsg-7+deb12u18+b3", "7.2+dfsg", "7+deb12u18+b3"),
        ("9.0.0-4+deb12u2", "9.0.0", "4+deb12u2"),
        ("0.15.1", "0.15.1", ""),
        ("2:1.2-3-4", "1.2-3", "4"),
    ],
)
def test_debian_versions_split_into_version_and_release(full, version, release):
    assert split_deb_version(full) == PackageVersion(version, release)


def test_dpkg_query_keeps_only_installed_packages():
    if not shutil.which("dpkg-query"):
        pytest.skip("not a Debian host")
    outputs = []

    def run(argv):
        out = osinfo.run_command(argv)
        outputs.append(out)
        return out

    found = osinfo.query_dpkg(["dpkg", "no-such-package-vdsm-py"], run)
    assert set(found) == {"dpkg"}
    real = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dpkg"],
                          capture_output=True, text=True, check=False).stdout
    assert found["dpkg"] == split_deb_version(real)


def test_kernel_version_splits_at_the_first_dash():
    assert osinfo.kernel_version("6.1.0-18-amd64") == PackageVersion("6.1.0", "18-amd64")
    assert osinfo.kernel_version("6.8.9") == PackageVersion("6.8.9", "")


def test_package_version_major_minor():
    assert PackageVersion("7.2+dfsg").major_minor() == (7, 2)
    assert PackageVersion("weird").major_minor() is None


# -- edge cases from small file trees -----------------------------------------------------


def test_arm_cpuinfo_without_model_name_or_mhz(tmp_path):
    paths = HostPaths(proc=tmp_path / "proc", sys=tmp_path / "sys")
    write(paths.proc / "cpuinfo",
          "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\n"
          "CPU part\t: 0xd0c\n\nprocessor\t: 1\nFeatures\t: fp asimd evtstrm aes\n")
    write(paths.sys / "devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "2100000\n")
    info = read_cpuinfo(paths)
    assert info.flags == ("fp", "asimd", "evtstrm", "aes")
    assert info.speed_mhz == 2100.0
    assert info.model  # platform.processor() or "unknown", never empty


def test_topology_counts_sockets_cores_and_threads(tmp_path):
    paths = HostPaths(sys=tmp_path / "sys")
    base = paths.sys / "devices/system/cpu"
    write(base / "online", "0-3,6\n")
    # 2 sockets x 1 core x 2 threads, plus cpu6 alone on socket 1 core 5
    layout = {0: (0, 0), 1: (0, 0), 2: (1, 0), 3: (1, 0), 6: (1, 5)}
    for cpu_id, (socket, core) in layout.items():
        write(base / f"cpu{cpu_id}/topology/physical_package_id", f"{socket}\n")
        write(base / f"cpu{cpu_id}/topology/core_id", f"{core}\n")
        (base / f"cpu{cpu_id}/node{socket}").mkdir()
    topo = read_topology(paths)
    assert topo.online == [0, 1, 2, 3, 6]
    assert (topo.sockets, topo.cores, topo.threads) == (2, 3, 5)
    assert topo.node_of(6) == 1


def test_numa_falls_back_to_one_node_without_sysfs_nodes(tmp_path):
    paths = HostPaths(proc=tmp_path / "proc", sys=tmp_path / "sys")
    write(paths.proc / "meminfo", "MemTotal:        2048000 kB\nMemFree: 1 kB\n")
    write(paths.sys / "devices/system/cpu/online", "0-1\n")
    topo = read_topology(paths)
    (node,) = read_nodes(paths, topo)
    assert node.node_id == 0 and node.cpus == (0, 1) and node.total_memory_kib == 2048000


def test_operating_system_from_os_release(tmp_path):
    paths = HostPaths(etc=tmp_path)
    write(tmp_path / "os-release",
          'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=39\nPRETTY_NAME="Fedora Linux 39"\n')
    assert osinfo.operating_system(paths) == {
        "name": "Fedora", "version": "39", "release": "", "pretty_name": "Fedora Linux 39"}
    write(tmp_path / "os-release", 'ID=debian\nVERSION_ID="12"\nNAME="Debian GNU/Linux"\n')
    write(tmp_path / "debian_version", "12.5\n")
    assert osinfo.operating_system(paths)["version"] == "12.5"


def test_cpu_list_syntax():
    assert parse_cpu_list("0-2,5,7-8\n") == [0, 1, 2, 5, 7, 8]
    assert parse_cpu_list("") == []


# -- host UUID ------------------------------------------------------------------------------

DMI_UUID = "4c4c4544-0042-3510-8051-b4c04f563232"


def dmi_paths(tmp_path: Path, product_uuid: str | None) -> HostPaths:
    paths = HostPaths(sys=tmp_path / "sys")
    if product_uuid is not None:
        write(paths.dmi / "product_uuid", product_uuid + "\n")
    return paths


def test_configured_uuid_wins(tmp_path):
    configured = str(uuid.uuid4())
    assert host_uuid(configured, tmp_path / "state", dmi_paths(tmp_path, DMI_UUID)) == \
        configured
    assert not (tmp_path / "state" / UUID_FILE).exists()


def test_dmi_uuid_is_used_when_nothing_was_stored(tmp_path):
    assert host_uuid("", tmp_path / "state", dmi_paths(tmp_path, DMI_UUID.upper())) == \
        DMI_UUID


def test_bogus_dmi_uuid_is_ignored_and_a_generated_one_is_kept(tmp_path):
    paths = dmi_paths(tmp_path, "00000000-0000-0000-0000-000000000000")
    state = tmp_path / "state"
    generated = host_uuid("", state, paths)
    assert uuid.UUID(generated).version == 4
    assert (state / UUID_FILE).read_text().strip() == generated
    assert host_uuid("", state, paths) == generated


def test_stored_uuid_beats_a_dmi_uuid_that_became_readable_later(tmp_path):
    state = tmp_path / "state"
    generated = host_uuid("", state, dmi_paths(tmp_path / "a", None))
    assert host_uuid("", state, dmi_paths(tmp_path / "b", DMI_UUID)) == generated


def test_corrupt_stored_uuid_is_replaced(tmp_path):
    state = tmp_path / "state"
    write(state / UUID_FILE, "garbage")
    generated = host_uuid("", state, dmi_paths(tmp_path, None))
    uuid.UUID(generated)
    assert (state / UUID_FILE).read_text().strip() == generated
    assert not [p for p in state.iterdir() if p.name.startswith(".")]  # no temp left


def test_caps_use_the_configured_uuid(tmp_path):
    configured = str(uuid.uuid4())
    caps = HostCapabilities(state_dir=tmp_path, configured_uuid=configured)
    assert caps.report()["uuid"] == configured
