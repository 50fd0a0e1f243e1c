"""Finding what runs: every active domain read back from libvirt, ours or not.

Owns the scan the daemon runs at start (and after libvirtd came back): one bulk call for
the states of all active domains, then their XML read in parallel chunks on the worker
pool and parsed there. A domain carrying our metadata is one of our VMs and comes back
with its launch flags, custom properties and per-device data; one without is an external
VM (started by someone else) and is adopted as such. This module only reads; the manager
decides what to do with what was found (:meth:`VmManager.recover`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import zlib
from dataclasses import dataclass

import libvirt

from vdsm_py.virt import domparse
from vdsm_py.virt.domparse import DomainInfo
from vdsm_py.virt.libvirtconn import error_code, message
from vdsm_py.virt.services import Services
from vdsm_py.virt.status import VmStatus

log = logging.getLogger("vdsm_py.virt")

_CHUNK = 50


@dataclass(frozen=True, slots=True)
class Found:
    info: DomainInfo
    xml_hash: str
    status: VmStatus


def release_freed_memory() -> None:
    """Worker: hand the memory the scan freed back to the system (glibc's malloc_trim).

    Reading a thousand domain XMLs on several threads leaves tens of MB freed but kept in
    glibc's per-thread arenas; without this the daemon would carry them for its lifetime.
    A no-op where glibc is not the C library.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def status_of(state: int) -> VmStatus:
    """The VDSM status of a domain libvirt reports in ``state``."""
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return VmStatus.PAUSED
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return VmStatus.POWERING_DOWN
    return VmStatus.UP


def _states(conn: libvirt.virConnect) -> dict[str, int]:
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    return {dom.UUIDString(): stats.get("state.state", libvirt.VIR_DOMAIN_RUNNING)
            for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, flags)}


def _read(conn: libvirt.virConnect, ids: list[str]) -> list[tuple[DomainInfo, str]]:
    out = []
    for vm_id in ids:
        try:
            xml = conn.lookupByUUIDString(vm_id).XMLDesc(0)
        except libvirt.libvirtError as exc:
            if error_code(exc) != libvirt.VIR_ERR_NO_DOMAIN:
                log.warning("vmId=%s: cannot read its domain XML: %s", vm_id, message(exc))
            continue  # gone meanwhile
        out.append((domparse.parse(xml), str(zlib.crc32(xml.encode("utf-8")))))
    return out


async def scan(svc: Services, parallel: int) -> list[Found]:
    """Every active domain, read and parsed."""
    states = await svc.conn.call(_states, name="recovery.states")
    ids = sorted(states)
    size = max(_CHUNK, -(-len(ids) // max(parallel, 1)))
    chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
    parts = await asyncio.gather(*(
        svc.conn.call(functools.partial(_read, ids=chunk), name="recovery.read",
                      timeout=svc.config.libvirt_timeout * 4)
        for chunk in chunks
    ))
    found = [Found(info, xml_hash, status_of(states[info.vm_id]))
             for part in parts for info, xml_hash in part]
    log.info("recovery found %d running domains (%d ours, %d external)", len(found),
             sum(1 for f in found if not f.info.external),
             sum(1 for f in found if f.info.external))
    return found
