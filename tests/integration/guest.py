"""A tiny real guest for QEMU tests: the machine's Debian kernel + a busybox initramfs.

The initramfs (built once, cached by kernel version and content) holds busybox-static, the
virtio/ACPI-button/evdev modules and an ``/init`` that:

- mounts proc, sys and devtmpfs and loads the modules;
- reports hot-plugged network and block devices on the serial console
  (``VDSM_PY_GUEST_UEVENT add net eth1``), through busybox ``uevent``;
- runs busybox ``acpid``, whose power-button handler powers the guest off, so an ACPI
  shutdown request (``virDomainShutdown``) really ends the guest;
- prints ``VDSM_PY_GUEST_UP`` on the serial console and idles.

``domain_xml`` describes such a guest for libvirt: direct kernel boot, TCG by default
(``type='qemu'``, libvirt's default CPU model: the machines' KVM cannot boot a stock kernel),
the serial console written to a file the tests read. This module builds files and XML only;
it never talks to libvirt.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import time
import uuid as uuid_module
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

MARKER_UP = "VDSM_PY_GUEST_UP"
MARKER_UEVENT = "VDSM_PY_GUEST_UEVENT"
MARKER_POWEROFF = "VDSM_PY_GUEST_POWEROFF"
MARKER_AGENT = "VDSM_PY_GUEST_AGENT_STARTED"
MARKER_AGENT_SHUTDOWN = "VDSM_PY_GUEST_AGENT_SHUTDOWN"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
GUEST_HOSTNAME = "vdsm-py-guest"

# Loaded in this order, each after the dependencies the host's modprobe lists for it.
GUEST_MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_balloon", "virtio_console",
    "button", "evdev",
)

KERNEL_CMDLINE = "console=ttyS0 panic=-1 quiet"

_INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /var/log /var/run
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do
    insmod "/modules/$module" || echo "VDSM_PY_GUEST_ERROR insmod $module"
done < /modules/order
hostname {GUEST_HOSTNAME}
ip link set lo up
start_agent=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vdsm_py.ip=*) ip link set eth0 up; ip addr add "${{arg#vdsm_py.ip=}}" dev eth0 ;;
        vdsm_py.agent=1) start_agent=1 ;;
    esac
done
uevent /bin/report-uevent &
acpid
if [ -n "$start_agent" ] && [ -x /bin/qemu-ga ]; then
    # The port's name arrives from QEMU shortly after virtio_console binds.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        for port in /sys/class/virtio-ports/*; do
            if [ "$(cat "$port/name" 2>/dev/null)" = {AGENT_CHANNEL} ]; then
                qemu-ga -m virtio-serial -p "/dev/${{port##*/}}" -l /tmp/qemu-ga.log &
                echo {MARKER_AGENT}
                break 2
            fi
        done
        sleep 0.5
    done
fi
echo {MARKER_UP}
while :; do sleep 3600; done
"""

_REPORT_UEVENT = f"""#!/bin/sh
case "$SUBSYSTEM" in
    net) echo "{MARKER_UEVENT} $ACTION net $INTERFACE" > /dev/console ;;
    block) echo "{MARKER_UEVENT} $ACTION block $DEVNAME" > /dev/console ;;
esac
"""

_POWER_BUTTON = f"""#!/bin/sh
echo {MARKER_POWEROFF} > /dev/console
sync
poweroff -f
"""

# What qemu-ga runs for guest-shutdown ("-P +0 ..." or "-r +0 ..."): answer, then act.
_AGENT_SHUTDOWN = f"""#!/bin/sh
echo "{MARKER_AGENT_SHUTDOWN} $*" > /dev/console
case " $* " in
    *" -r "*) (sleep 1; sync; reboot -f) & ;;
    *) (sleep 1; sync; poweroff -f) & ;;
esac
exit 0
"""

_OS_RELEASE = """ID=vdsmpyguest
NAME="vdsm_py tiny guest"
VERSION_ID=1
VERSION="1 (busybox)"
PRETTY_NAME="vdsm_py tiny guest 1"
"""

# Guest files: path in the initramfs -> content (all executable but os-release).
_SCRIPTS = {
    "init": _INIT,
    "bin/report-uevent": _REPORT_UEVENT,
    "etc/acpi/PWRF/00000080": _POWER_BUTTON,
    "sbin/shutdown": _AGENT_SHUTDOWN,
}


class GuestUnavailable(Exception):
    """This machine lacks what the tiny guest needs (kernel, modules, busybox-static)."""


@dataclass(frozen=True)
class GuestImage:
    """A bootable kernel + initramfs pair; ``has_agent``: it carries qemu-guest-agent."""

    kernel: Path
    initramfs: Path
    kernel_version: str
    has_agent: bool = False
    cmdline: str = KERNEL_CMDLINE


def find_kernel() -> tuple[str, Path]:
    """The newest /boot/vmlinuz-* that has modules installed: (version, path)."""
    candidates = []
    for path in glob.glob("/boot/vmlinuz-*"):
        version = path.removeprefix("/boot/vmlinuz-")
        if os.path.isdir(f"/lib/modules/{version}/kernel"):
            candidates.append((version, Path(path)))
    if not candidates:
        raise GuestUnavailable("no /boot/vmlinuz-* with modules: apt-get install linux-image-amd64")
    return max(candidates, key=lambda c: _version_key(c[0]))


def _version_key(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


def _busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.exists() and _is_static_elf(path):
            return path
    raise GuestUnavailable("no static busybox: apt-get install busybox-static")


def _is_static_elf(path: Path) -> bool:
    """A 64-bit little-endian ELF without a PT_INTERP program header (no dynamic loader)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:6] != b"\x7fELF\x02\x01":
            return False
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


def module_paths(kernel_version: str, modules: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """Module files to load, dependencies first, each once (from the host's modprobe)."""
    ordered: list[Path] = []
    for module in modules:
        try:
            out = subprocess.run(
                ["modprobe", "--show-depends", "-S", kernel_version, module],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise GuestUnavailable(f"cannot resolve module {module}: {exc}") from exc
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in ordered:
                    ordered.append(path)
    return ordered


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        raise GuestUnavailable(f"zstd-compressed module {path} is not supported")
    return data


class _Cpio:
    """A minimal writer of the "newc" cpio format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name_bytes = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_bytes), 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.out.write(name_bytes)
        self.out.write(b"\0" * (-(110 + len(name_bytes)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        if name not in self.dirs:
            self.dirs.add(name)
            self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def agent_files() -> dict[str, Path]:
    """qemu-guest-agent and the shared libraries it needs: initramfs path -> host file.

    Empty when the machine has no qemu-ga (apt-get install qemu-guest-agent).
    """
    binary = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
    if not os.access(binary, os.X_OK):
        return {}
    out = subprocess.run(
        ["ldd", binary], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    files = {"bin/qemu-ga": Path(binary)}
    for line in out.splitlines():
        # "libglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x...)" or the
        # loader's "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        parts = line.split()
        path = parts[2] if len(parts) >= 3 and parts[1] == "=>" else parts[0]
        if path.startswith("/"):
            files[path.lstrip("/")] = Path(path)
    return files


def _initramfs_bytes(kernel_version: str, agent: dict[str, Path]) -> bytes:
    cpio = _Cpio()
    directories = {"bin", "sbin", "modules", "etc/acpi/PWRF"}
    directories.update(str(Path(name).parent) for name in agent)
    for directory in sorted(directories):
        parts = Path(directory).parts
        for i in range(1, len(parts) + 1):
            cpio.directory("/".join(parts[:i]))
    cpio.file("bin/busybox", _busybox().read_bytes(), 0o755)
    for name, script in _SCRIPTS.items():
        cpio.file(name, script.encode(), 0o755)
    cpio.file("etc/os-release", _OS_RELEASE.encode())
    for name, path in agent.items():
        cpio.file(name, path.read_bytes(), 0o755)
    names = []
    for path in module_paths(kernel_version):
        name = path.name.split(".ko")[0] + ".ko"
        names.append(name)
        cpio.file(f"modules/{name}", _module_bytes(path))
    cpio.file("modules/order", ("\n".join(names) + "\n").encode())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def build_guest(cache_dir: Path) -> GuestImage:
    """The kernel and a cached initramfs for it (rebuilt when the kernel, the guest's
    scripts or the agent's files change)."""
    version, kernel = find_kernel()
    agent = agent_files()
    identity = [version, _OS_RELEASE, *_SCRIPTS.values(), *GUEST_MODULES]
    for name, path in sorted(agent.items()):
        st = path.stat()
        identity.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    target = cache_dir / f"initramfs-{version}-{key}.img"
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(_initramfs_bytes(version, agent))
        os.replace(tmp, target)
    return GuestImage(kernel, target, version, has_agent=bool(agent))


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str):
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def domain_xml(
    name: str,
    image: GuestImage,
    console_log: Path,
    *,
    memory_mib: int = 192,
    vcpus: int = 1,
    domain_type: str = "qemu",
    machine: str = "pc",
    uuid: str | None = None,
    vnc: bool = False,
    agent: bool = False,
    user_nic_ip: str | None = None,
) -> str:
    """Domain XML for the tiny guest: direct kernel boot, serial console to ``console_log``.

    ``agent``: a qemu-guest-agent channel, and the guest starts its agent (the image must
    have one). ``user_nic_ip``: a virtio NIC on QEMU's user network, configured by the
    guest with this address/prefix (e.g. ``10.0.2.15/24``).
    """
    if agent and not image.has_agent:
        raise GuestUnavailable("this guest image has no qemu-ga: apt-get install qemu-guest-agent")
    cmdline = image.cmdline
    if agent:
        cmdline += " vdsm_py.agent=1"
    if user_nic_ip:
        cmdline += f" vdsm_py.ip={user_nic_ip}"
    dom = etree.Element("domain", type=domain_type)
    _sub(dom, "name", name)
    _sub(dom, "uuid", uuid or str(uuid_module.uuid4()))
    _sub(dom, "memory", str(memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=machine)
    _sub(os_el, "kernel", str(image.kernel))
    _sub(os_el, "initrd", str(image.initramfs))
    _sub(os_el, "cmdline", cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(console_log))
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=str(console_log))
    _sub(console, "target", type="serial", port="0")
    if vnc:
        # QEMU accepts a password later only if the display started with one: start with
        # an expired password, as VDSM does (nobody gets in until a ticket is set).
        _sub(
            devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1",
            passwd="expired", passwdValidTo="1970-01-01T00:00:01",
        )
    if user_nic_ip:
        devices.append(etree.fromstring(user_nic_xml("52:54:00:00:0a:01")))
    if agent:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "source", mode="bind")
        _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    _sub(devices, "memballoon", model="virtio")
    return etree.tostring(dom, encoding="unicode")


def read_console(console_log: Path) -> str:
    try:
        return console_log.read_text(errors="replace")
    except OSError:
        return ""


def wait_for_console(
    console_log: Path, pattern: str, *, timeout: float = 90.0, start: int = 0
) -> str:
    """Wait until ``pattern`` (a plain string) appears in the console after offset ``start``.

    Returns the console text. Raises TimeoutError with the console's tail otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = read_console(console_log)
        if pattern in text[start:]:
            return text
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{pattern!r} not on the guest console after {timeout}s; console tail:\n"
                f"{text[-3000:]}"
            )
        time.sleep(0.2)


def disk_xml(path: Path, target: str = "vdb") -> str:
    """A raw file-backed virtio disk, for hot-plugging with raw libvirt."""
    disk = etree.Element("disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="raw")
    _sub(disk, "source", file=str(path))
    _sub(disk, "target", dev=target, bus="virtio")
    return etree.tostring(disk, encoding="unicode")


def user_nic_xml(mac: str) -> str:
    """A virtio NIC on QEMU's user-mode network (needs no host bridge)."""
    nic = etree.Element("interface", type="user")
    _sub(nic, "mac", address=mac)
    _sub(nic, "model", type="virtio")
    return etree.tostring(nic, encoding="unicode")
