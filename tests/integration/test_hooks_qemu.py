"""Hooks against a real libvirtd + QEMU: what a before_vm_start chain returns really starts.

The VM layer passes ``HookRunner.before_vm_start``'s XML and flags to libvirt; here the same
calls are made by hand, so the hook contract is proven on real QEMU independently of it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import libvirt
import pytest

from tests.integration import guest
from tests.integration.libvirtd import LibvirtdInstance
from vdsm_py.errors import HookError
from vdsm_py.hooks import HOOKING_PATH, HookRunner


def qemu_cmdline_of(libvirtd: LibvirtdInstance, name: str) -> list[str]:
    for pid in libvirtd.qemu_pids():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        args = [a.decode(errors="replace") for a in argv if a]
        if any(a.startswith(f"guest={name},") or a == f"guest={name}" for a in args):
            return args
    raise AssertionError(f"no QEMU process for domain {name}")


@pytest.fixture
def hooks_root(tmp_path: Path) -> Path:
    root = tmp_path / "hooks"
    (root / "before_vm_start").mkdir(parents=True)
    return root


async def test_qemu_cmdline_hook_reaches_the_real_qemu_and_flags_apply(
    libvirtd: LibvirtdInstance, conn, tiny_guest: guest.GuestImage, tmp_path: Path, hooks_root
):
    shutil.copy2(
        HOOKING_PATH / "examples" / "qemu_cmdline" / "qemu_cmdline.py",
        hooks_root / "before_vm_start" / "50_qemu_cmdline",
    )
    # A second script asks for the VM to start paused, through the launch-flags file.
    flags_script = hooks_root / "before_vm_start" / "60_paused"
    flags_script.write_text(
        "#!/usr/bin/python3\n"
        "import os, hooking\n"
        "vm = os.environ['vmId']\n"
        "flags = hooking.load_vm_launch_flags_from_file(vm)\n"
        f"hooking.dump_vm_launch_flags_to_file(vm, flags | {libvirt.VIR_DOMAIN_START_PAUSED})\n"
    )
    flags_script.chmod(0o755)
    runner = HookRunner(hooks_root, timeout=60, run_dir=tmp_path / "run")
    vm_id = str(uuid.uuid4())
    name = f"hooked-{vm_id[:8]}"
    xml = guest.domain_xml(name, tiny_guest, tmp_path / "console.log", uuid=vm_id)
    marker = f"type=1,serial=hooked-{vm_id[:8]}"

    hooked_xml, flags = await runner.before_vm_start(
        xml, vm_id=vm_id, custom={"qemu_cmdline": json.dumps(["-smbios", marker])}
    )
    assert flags == libvirt.VIR_DOMAIN_START_PAUSED
    dom = conn.createXML(hooked_xml, flags)
    try:
        args = qemu_cmdline_of(libvirtd, name)
        assert ["-smbios", marker] in [args[i : i + 2] for i in range(len(args) - 1)], args
        state, _reason = dom.state()
        assert state == libvirt.VIR_DOMAIN_PAUSED
    finally:
        dom.destroy()


async def test_failing_hook_means_no_domain_is_created(
    libvirtd: LibvirtdInstance, conn, tiny_guest: guest.GuestImage, tmp_path: Path, hooks_root
):
    shutil.copy2(
        HOOKING_PATH / "examples" / "qemu_cmdline" / "qemu_cmdline.py",
        hooks_root / "before_vm_start" / "50_qemu_cmdline",
    )
    runner = HookRunner(hooks_root, timeout=60, run_dir=tmp_path / "run")
    vm_id = str(uuid.uuid4())
    xml = guest.domain_xml(f"never-{vm_id[:8]}", tiny_guest, tmp_path / "c.log", uuid=vm_id)
    before = set(conn.listDomainsID())
    with pytest.raises(HookError, match="qemu_cmdline: not JSON"):
        await runner.before_vm_start(xml, vm_id=vm_id, custom={"qemu_cmdline": "-S"})
    assert set(conn.listDomainsID()) == before
    assert list((tmp_path / "run" / "launchflags").iterdir()) == []
