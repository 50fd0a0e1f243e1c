"""The host's hardware identity (``Host.getHardwareInfo``) from DMI in ``/sys/class/dmi/id``.

Owns mapping the kernel's DMI files to VDSM's ``HardwareInformation`` keys. Files may be
missing (no DMI on this platform, e.g. many ARM boards and some VMs) or readable by root
only (serial number, UUID): only what could be read is reported, and values the firmware
leaves as "Not Specified" are dropped, as VDSM does. DMI does not change while the host
runs, so the first reading is kept. Blocking file reads: call from a worker thread.
"""

from __future__ import annotations

import logging
import threading

from vdsm_py.host.paths import DEFAULT_PATHS, HostPaths, read_text

log = logging.getLogger("vdsm_py.host")

# VDSM key → file under /sys/class/dmi/id
DMI_FILES = {
    "systemManufacturer": "sys_vendor",
    "systemProductName": "product_name",
    "systemVersion": "product_version",
    "systemSerialNumber": "product_serial",
    "systemUUID": "product_uuid",
    "systemFamily": "product_family",
}
_UNSET = {"", "Not Specified"}


def read_dmi(paths: HostPaths) -> dict[str, str]:
    """The DMI fields that exist and are readable, under VDSM's names."""
    info = {}
    unreadable = []
    for key, filename in DMI_FILES.items():
        path = paths.dmi / filename
        value = read_text(path)
        if value is None:
            if path.exists():
                unreadable.append(filename)
            continue
        if value not in _UNSET:
            info[key] = value
    if unreadable:
        log.info("DMI files not readable (not running as root?): %s", ", ".join(unreadable))
    return info


class HardwareInfo:
    """Reads DMI once and answers from that reading afterwards."""

    def __init__(self, paths: HostPaths = DEFAULT_PATHS) -> None:
        self.paths = paths
        self._info: dict[str, str] | None = None
        self._lock = threading.Lock()

    def report(self) -> dict[str, str]:
        with self._lock:
            if self._info is None:
                self._info = read_dmi(self.paths)
            return dict(self._info)
