"""Run a command inside a throw-away QEMU guest booting the stock Debian kernel.

For kernel features the CI machines' own kernel lacks (8021q VLANs, bonding, dummy): the
guest boots ``/boot/vmlinuz-*`` with a tiny busybox initramfs that loads the virtio and 9p
modules, mounts the host's ``/`` read-only over 9p with a tmpfs overlay on top (so the
host's Python, virtualenv and source tree are there, writable but throw-away), chroots into
it and runs a shell script from a scratch share. Output and exit code come back through the
scratch share; the guest then powers off. QEMU runs under TCG (this machine's KVM cannot
boot a stock kernel), always under ``timeout``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BOOT_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                "virtio_pci", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p", "overlay")
SCRATCH_IN_GUEST = "/vmscratch"

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /modules/$m.ko || echo "insmod $m failed"; done
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro root /lower
mount -t tmpfs tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot
mkdir -p /newroot{scratch}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 scratch /newroot{scratch}
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts
mount -t devpts devpts /newroot/dev/pts
# /tmp stays the overlay's (writable, throw-away): a tmpfs there would hide a checkout
# that lives under the host's /tmp, as CI's clones may.
mount -t tmpfs tmpfs /newroot/run
printf '#!/bin/sh\\nexec /bin/chroot /newroot /sbin/modprobe "$@"\\n' > /modprobe-wrapper
chmod +x /modprobe-wrapper
echo /modprobe-wrapper > /proc/sys/kernel/modprobe
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
  chroot /newroot /bin/sh {scratch}/command.sh > /newroot{scratch}/output 2>&1
echo $? > /newroot{scratch}/exit_code
sync
umount /newroot{scratch}
poweroff -f
"""


@dataclass(frozen=True)
class GuestResult:
    exit_code: int | None  # None: the guest never wrote one (crashed, timed out)
    output: str
    console: str


def kernel_image() -> Path | None:
    images = sorted(glob.glob("/boot/vmlinuz-*"))
    return Path(images[-1]) if images else None


def unavailable_reason() -> str:
    """Why no guest can run here ('' when one can)."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed"
    image = kernel_image()
    if image is None:
        return "no /boot/vmlinuz-* (apt-get install linux-image-amd64)"
    if not Path(f"/lib/modules/{image.name.removeprefix('vmlinuz-')}").is_dir():
        return f"no modules for {image.name}"
    if not (shutil.which("busybox") and shutil.which("cpio")):
        return "busybox-static and cpio are needed for the initramfs"
    return ""


def build_initramfs(workdir: Path, release: str) -> Path:
    root = workdir / "initramfs"
    for sub in ("bin", "modules", "proc", "sys", "dev", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    for module in BOOT_MODULES:
        path = subprocess.run(
            ["modinfo", "-k", release, "-n", module], check=True, capture_output=True, text=True
        ).stdout.strip()
        shutil.copy2(path, root / "modules" / f"{module}.ko")
    init = root / "init"
    init.write_text(INIT.format(modules=" ".join(BOOT_MODULES), scratch=SCRATCH_IN_GUEST))
    init.chmod(0o755)
    image = workdir / "initramfs.cpio"
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    with open(image, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
                       stdout=out, check=True)
    return image


def run_in_guest(script: str, *, timeout: float = 600, memory_mb: int = 1024) -> GuestResult:
    """Boot a guest, run ``script`` (POSIX sh, in the host's tree) as root, return results."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    image = kernel_image()
    assert image is not None
    release = image.name.removeprefix("vmlinuz-")
    with tempfile.TemporaryDirectory(prefix="kernel-vm-") as tmp:
        work = Path(tmp)
        initramfs = build_initramfs(work, release)
        scratch = work / "scratch"
        scratch.mkdir()
        (scratch / "command.sh").write_text(script)
        console = scratch / "console.log"
        argv = [
            "timeout", str(int(timeout)), "qemu-system-x86_64",
            "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(memory_mb), "-smp", "2",
            "-machine", "q35", "-nodefaults", "-no-user-config", "-nic", "none",
            "-kernel", str(image), "-initrd", str(initramfs),
            "-append", "console=ttyS0 panic=-1 quiet",
            "-virtfs",
            "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={scratch},mount_tag=scratch,security_model=none,multidevs=remap",
            "-display", "none", "-no-reboot", "-monitor", "none",
            "-serial", f"file:{console}",
        ]
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       env={**os.environ, "TMPDIR": str(work)}, check=False)
        code_file = scratch / "exit_code"
        exit_code = int(code_file.read_text().strip()) if code_file.exists() else None
        output_file = scratch / "output"
        return GuestResult(
            exit_code=exit_code,
            output=output_file.read_text(errors="replace") if output_file.exists() else "",
            console=console.read_text(errors="replace") if console.exists() else "",
        )


IN_GUEST_ENV = "VDSM_PY_IN_KERNEL_GUEST"  # set inside the guest: its tests run, the host's skip
REPO = Path(__file__).resolve().parents[2]


def run_guest_tests(test_file: str | Path, expected: int, *, preamble: str = "",
                    timeout: float = 900) -> None:
    """Run ``test_file``'s ``guest_`` tests inside a guest; assert exactly ``expected`` pass.

    ``preamble`` (sh) runs first, as root in the guest (module loads, servers); a test file
    marks its in-guest tests with a skip unless ``IN_GUEST_ENV`` is "1". Nothing may skip
    there: a skip would hide a missing kernel feature.
    """
    relative = Path(test_file).resolve().relative_to(REPO)
    script = (
        f"{preamble}\ncd {REPO}\nexport {IN_GUEST_ENV}=1\n"
        f"exec .venv/bin/python -m pytest -q -p no:cacheprovider -rs -vv {relative} -k guest_\n"
    )
    result = run_in_guest(script, timeout=timeout)
    detail = f"output:\n{result.output}\nconsole tail:\n{result.console[-2000:]}"
    assert result.exit_code == 0, detail
    assert re.search(rf"\b{expected} passed\b", result.output), detail
    assert "skipped" not in result.output, detail
