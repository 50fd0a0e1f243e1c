"""Operating system, kernel and key package versions of the host.

Owns reading ``os-release``, ``uname`` and ``/proc/cmdline``, and finding the installed
versions of the kernel, libvirt and QEMU: one ``dpkg-query`` (or ``rpm -q``) for all
packages, then, for what the package database did not know, libvirt-python's
``getVersion()`` and ``qemu-system-<arch> --version``. These run a subprocess: call from a
worker thread, once (``caps`` caches the result). Must not format for the wire beyond VDSM's
``{"version", "release"}`` pairs.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from vdsm_py.host.paths import HostPaths, read_text

log = logging.getLogger("vdsm_py.host")

Runner = Callable[[list[str]], str | None]

# VDSM's package aliases (packages2 keys) → package names, first installed one wins.
_QEMU_SYSTEMS = ("qemu-system-x86", "qemu-system-arm", "qemu-system-ppc", "qemu-system-s390x")
DEB_PACKAGES: dict[str, tuple[str, ...]] = {
    "libvirt": ("libvirt0", "libvirt-daemon"),
    "qemu-kvm": ("qemu-kvm", *_QEMU_SYSTEMS),
    "qemu-img": ("qemu-utils",),
    "spice-server": ("libspice-server1",),
}
RPM_PACKAGES: dict[str, tuple[str, ...]] = {
    "libvirt": ("libvirt", "libvirt-daemon-kvm", "libvirt-libs"),
    "qemu-kvm": ("qemu-kvm", "qemu-kvm-ev", "qemu-kvm-rhev", "qemu-system-x86"),
    "qemu-img": ("qemu-img", "qemu-img-ev"),
    "spice-server": ("spice-server",),
}

_OS_NAMES = {
    "debian": "Debian", "fedora": "Fedora", "rhel": "RHEL", "centos": "RHEL",
    "rocky": "RHEL", "almalinux": "RHEL", "ovirt-node": "oVirt Node",
}
_QEMU_VERSION = re.compile(r"QEMU emulator version (\d+(?:\.\d+)+)")
_QEMU_BINARIES = {
    "x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64",
    "ppc64le": "qemu-system-ppc64", "s390x": "qemu-system-s390x",
}


@dataclass(frozen=True)
class PackageVersion:
    version: str
    release: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"version": self.version, "release": self.release}

    def major_minor(self) -> tuple[int, int] | None:
        m = re.match(r"(\d+)\.(\d+)", self.version)
        return (int(m.group(1)), int(m.group(2))) if m else None


def run_command(argv: list[str]) -> str | None:
    """stdout of ``argv`` (even on a non-zero exit), or None if it cannot run at all."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=20, check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("cannot run %s: %s", argv[0], exc)
        return None
    return proc.stdout


def os_release(paths: HostPaths) -> dict[str, str]:
    """``/etc/os-release`` as a dict with quotes removed."""
    data: dict[str, str] = {}
    for line in (read_text(paths.etc / "os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            data[key.strip()] = value.strip().strip("\"'")
    return data


def operating_system(paths: HostPaths) -> dict[str, str]:
    """VDSM's ``operatingSystem``: name, version, release, pretty_name."""
    rel = os_release(paths)
    os_id = rel.get("ID", "")
    name = _OS_NAMES.get(os_id) or rel.get("NAME") or platform.system()
    version = rel.get("VERSION_ID", "")
    if os_id == "debian":
        version = read_text(paths.etc / "debian_version") or version  # e.g. 12.5, as VDSM
    return {"name": name, "version": version, "release": "",
            "pretty_name": rel.get("PRETTY_NAME", name)}


def kernel_version(uname_release: str | None = None) -> PackageVersion:
    """``6.1.0-18-amd64`` → version ``6.1.0``, release ``18-amd64`` (VDSM's split)."""
    rel = uname_release or platform.release()
    version, _, release = rel.partition("-")
    return PackageVersion(version, release)


def kernel_args(paths: HostPaths) -> str:
    return read_text(paths.proc / "cmdline") or ""


def realtime_kernel() -> bool:
    return "PREEMPT_RT" in platform.version()


def split_deb_version(full: str) -> PackageVersion:
    """``1:7.2+dfsg-7+deb12u18`` → version ``7.2+dfsg``, release ``7+deb12u18``."""
    _, _, without_epoch = full.rpartition(":")
    version, sep, revision = without_epoch.rpartition("-")
    return PackageVersion(version, revision) if sep else PackageVersion(without_epoch)


def query_dpkg(names: list[str], run: Runner) -> dict[str, PackageVersion]:
    """Installed Debian packages among ``names``; one dpkg-query call."""
    if not shutil.which("dpkg-query"):
        return {}
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n",
               *names])
    found = {}
    for line in (out or "").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[2].startswith("ii") and fields[1]:
            found[fields[0].split(":")[0]] = split_deb_version(fields[1])
    return found


def query_rpm(names: list[str], run: Runner) -> dict[str, PackageVersion]:
    """Installed RPM packages among ``names``; one rpm call."""
    if not shutil.which("rpm"):
        return {}
    out = run(["rpm", "-q", "--qf", "%{NAME}\t%{VERSION}\t%{RELEASE}\n", *names])
    found = {}
    for line in (out or "").splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
            found[fields[0]] = PackageVersion(fields[1], fields[2])
    return found


def libvirt_library_version() -> PackageVersion | None:
    """The libvirt library version libvirt-python is linked with (no connection needed)."""
    try:
        import libvirt
    except ImportError:
        return None
    try:
        number = libvirt.getVersion()
    except libvirt.libvirtError as exc:
        log.info("cannot get the libvirt version: %s", exc)
        return None
    return PackageVersion(f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}")


def qemu_binary_version(run: Runner) -> PackageVersion | None:
    """Version printed by the host architecture's QEMU system emulator, if installed."""
    candidates = [_QEMU_BINARIES.get(platform.machine(), ""), "/usr/libexec/qemu-kvm"]
    for candidate in candidates:
        binary = shutil.which(candidate) if candidate else None
        if binary:
            m = _QEMU_VERSION.search(run([binary, "--version"]) or "")
            if m:
                return PackageVersion(m.group(1))
    return None


def package_versions(run: Runner = run_command) -> dict[str, PackageVersion]:
    """VDSM's ``packages2`` content for kernel, libvirt, qemu-kvm, qemu-img, spice-server.

    Packages that are not installed are left out (as VDSM does).
    """
    result = {"kernel": kernel_version()}
    for table, query in ((DEB_PACKAGES, query_dpkg), (RPM_PACKAGES, query_rpm)):
        names = sorted({n for alts in table.values() for n in alts})
        installed = query(names, run)
        if not installed:
            continue
        for alias, alternatives in table.items():
            for name in alternatives:
                if name in installed:
                    result[alias] = installed[name]
                    break
        break
    if "libvirt" not in result:
        lib = libvirt_library_version()
        if lib:
            result["libvirt"] = lib
    if "qemu-kvm" not in result:
        qemu = qemu_binary_version(run)
        if qemu:
            result["qemu-kvm"] = qemu
    return result
