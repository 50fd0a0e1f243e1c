"""The real-QEMU test infrastructure itself, proven with raw libvirt calls.

The private libvirtd boots the tiny guest under TCG, the guest reports hot-plugged devices
and obeys the ACPI power button, two instances are independent hosts, and stopping an
instance leaves no process behind. The VM layer's own tests rely on all of this.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.integration import guest, rfb
from tests.integration.libvirtd import LibvirtdInstance, pid_alive

pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 120  # TCG on 2 busy cores: usually ~10 s


def wait_inactive(dom: libvirt.virDomain, timeout: float) -> bool:
    """True once the (transient) domain stopped: inactive or gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not dom.isActive():
                return True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True
            raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def test_tiny_guest_boots_sees_hotplugged_devices_and_obeys_acpi_power_button(
    libvirtd: LibvirtdInstance, conn, tiny_guest: guest.GuestImage, tmp_path: Path
) -> None:
    name = f"fixture-{uuid.uuid4().hex[:8]}"
    console = tmp_path / "console.log"
    dom = conn.createXML(guest.domain_xml(name, tiny_guest, console), 0)
    try:
        guest.wait_for_console(console, guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        offset = len(guest.read_console(console))

        nic = guest.user_nic_xml("52:54:00:aa:bb:01")
        dom.attachDeviceFlags(nic, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        guest.wait_for_console(console, f"{guest.MARKER_UEVENT} add net eth0", start=offset)

        disk_path = tmp_path / "disk.img"
        disk_path.write_bytes(b"\0" * 1024 * 1024)
        disk = guest.disk_xml(disk_path)
        dom.attachDeviceFlags(disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        guest.wait_for_console(console, f"{guest.MARKER_UEVENT} add block vda", start=offset)

        dom.shutdown()  # ACPI power button
        assert wait_inactive(dom, 60), libvirtd.qemu_log(name)
        assert guest.MARKER_POWEROFF in guest.read_console(console)
    finally:
        if not wait_inactive(dom, 0):
            dom.destroy()
    assert name not in [d.name() for d in conn.listAllDomains()]
    assert libvirtd.qemu_pids() == []


def test_two_instances_are_separate_hosts_that_can_live_migrate_a_guest(
    libvirtd: LibvirtdInstance, libvirtd_factory, conn, tiny_guest: guest.GuestImage,
    tmp_path: Path,
) -> None:
    other = libvirtd_factory("libvirtd-peer")
    other_conn = other.connect()
    try:
        uuids = {
            re.search(r"<uuid>([^<]+)</uuid>", c.getCapabilities()).group(1)
            for c in (conn, other_conn)
        }
        assert uuids == {libvirtd.host_uuid, other.host_uuid}
        assert len(uuids) == 2

        name = f"migrant-{uuid.uuid4().hex[:8]}"
        console = tmp_path / "console.log"
        dom = conn.createXML(guest.domain_xml(name, tiny_guest, console), 0)
        assert name not in [d.name() for d in other_conn.listAllDomains()]
        # Migrate while the guest boots: it finishes booting on the other host.
        dom.migrateToURI3(
            other.uri,
            {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER,
        )
        assert name not in [d.name() for d in conn.listAllDomains()]
        moved = other_conn.lookupByName(name)
        try:
            assert moved.isActive()
            guest.wait_for_console(console, guest.MARKER_UP, timeout=BOOT_TIMEOUT)
        finally:
            moved.destroy()
    finally:
        other_conn.close()


def test_stop_leaves_no_daemon_or_qemu_behind(
    libvirtd_factory, tiny_guest: guest.GuestImage, tmp_path: Path
) -> None:
    instance = libvirtd_factory("libvirtd-doomed")
    conn = instance.connect()
    try:
        conn.createXML(guest.domain_xml("doomed", tiny_guest, tmp_path / "c.log"), 0)
    finally:
        conn.close()
    qemu_pids = instance.qemu_pids()
    virtlogd_pid = int(instance.virtlogd_pidfile.read_text())
    assert len(qemu_pids) == 1

    instance.stop()

    assert instance.proc.poll() is not None
    assert not any(pid_alive(pid) for pid in [*qemu_pids, virtlogd_pid])


def test_vnc_client_gets_in_with_the_password_only(
    libvirtd: LibvirtdInstance, conn, tiny_guest: guest.GuestImage, tmp_path: Path
) -> None:
    name = f"vnc-{uuid.uuid4().hex[:8]}"
    dom = conn.createXML(guest.domain_xml(name, tiny_guest, tmp_path / "c.log", vnc=True), 0)
    try:
        graphics = etree.fromstring(dom.XMLDesc()).find("devices/graphics")
        port = int(graphics.get("port"))
        assert rfb.vnc_login("127.0.0.1", port, "expired").accepted is False
        graphics.set("passwd", "s3c&<>t!")
        graphics.attrib.pop("passwdValidTo", None)
        dom.updateDeviceFlags(etree.tostring(graphics, encoding="unicode"),
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)

        assert rfb.vnc_login("127.0.0.1", port, None).accepted is False
        wrong = rfb.vnc_login("127.0.0.1", port, "wrong")
        assert rfb.SECURITY_VNC_AUTH in wrong.security_types
        assert wrong.accepted is False
        assert rfb.vnc_login("127.0.0.1", port, "s3c&<>t!").accepted is True
    finally:
        dom.destroy()
