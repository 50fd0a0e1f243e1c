"""Hook scripts through the real daemon on real QEMU: what a hook writes reaches QEMU.

The test driver drops ``<qemu:commandline>``, so only a real QEMU shows that the
``qemu_cmdline`` example's arguments travel from a custom property, through the daemon's
``before_vm_start`` chain and libvirt, onto the QEMU process's command line.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.integration.libvirtd import LibvirtdInstance
from tests.integration.qemu_host import start_qemu_host, wait_until
from vdsm_py.client import RpcError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "hooks" / "examples" / "qemu_cmdline" / "qemu_cmdline.py"

pytestmark = pytest.mark.slow


def qemu_cmdline(libvirtd: LibvirtdInstance, vm_id: str) -> list[str]:
    for pid in libvirtd.qemu_pids():
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(vm_id.encode() in a for a in args):
            return [a.decode(errors="replace") for a in args]
    return []


def test_qemu_cmdline_hook_arguments_reach_the_qemu_process(
    libvirtd: LibvirtdInstance, tmp_path: Path
) -> None:
    root = tmp_path / "host"
    hook_dir = root / "hooks" / "before_vm_start"
    hook_dir.mkdir(parents=True)
    shutil.copy(EXAMPLE, hook_dir / "50_qemu_cmdline")
    (hook_dir / "50_qemu_cmdline").chmod(0o755)
    host = start_qemu_host(root, libvirtd)
    vm_id = str(uuid.uuid4())
    marker = f"hooked-{vm_id[:8]}"
    try:
        # No disk and no kernel: QEMU starts (and idles in its firmware), which is all
        # this test needs to read the process's arguments.
        answer = host.call("VM.create", vmID=vm_id, vmParams={
            "vmName": f"hooked-{vm_id[:8]}",
            "memSize": 64,
            "kvmEnable": False,
            "emulatedMachine": "pc",
            "custom": {"qemu_cmdline": json.dumps(["-smbios", f"type=1,product={marker}"])},
        })
        assert answer["status"] == "WaitForLaunch"
        args = wait_until(lambda: qemu_cmdline(libvirtd, vm_id), 60, "the QEMU process")
        assert f"type=1,product={marker}" in args
        assert args[args.index(f"type=1,product={marker}") - 1] == "-smbios"
    finally:
        with contextlib.suppress(RpcError, OSError):
            host.call("VM.destroy", vmID=vm_id)
        host.close()
