"""Console tickets: a VNC/SPICE password that expires, set on the running domain.

Owns ``VM.setTicket`` (and the graphics branch of ``VM.updateDevice``): the expiry is
checked (a negative, zero or too long validity is refused, naming ``ttl``), the domain's
graphics element is taken from libvirt, given ``passwd`` and ``passwdValidTo`` (UTC) and —
for SPICE — what to do with a client already connected (``connected``: disconnect, keep,
fail), and handed back with ``updateDeviceFlags``. A driver that cannot update graphics
(libvirt's test driver) makes the call fail with error 18 carrying libvirt's message.
A VNC password is cut to its first 8 characters: VNC authentication only uses those
(clients cut it the same way) and libvirt refuses longer ones. The disconnect action
(what to do when the console client goes away) is recorded; :mod:`.console` runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import libvirt
from lxml import etree

from vdsm_py.errors import TicketError, invalid_parameter
from vdsm_py.virt.services import Services, libvirt_failure
from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt")

DEFAULT_TTL = 120
VNC_PASSWORD_BYTES = 8  # VNC authentication uses 8 bytes; libvirt refuses longer passwords
CONN_ACTIONS = ("disconnect", "keep", "fail")
DISCONNECT_ACTIONS = ("LOCK_SCREEN", "LOGOUT", "SHUTDOWN", "REBOOT", "NONE")


def valid_to(ttl: int, now: float | None = None) -> str:
    """libvirt's ``passwdValidTo``: UTC, second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now or time.time()) + ttl))


def check_ttl(ttl: int, max_ttl: int) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise invalid_parameter("ttl", "expected an integer number of seconds")
    if ttl <= 0:
        raise invalid_parameter("ttl", f"must be a positive number of seconds, got {ttl}")
    if ttl > max_ttl:
        raise invalid_parameter("ttl", f"at most {max_ttl} seconds, got {ttl}")


def ticket_element(
    graphics: etree._Element, password: str, ttl: int, conn_action: str | None
) -> etree._Element:
    """A copy of ``graphics`` carrying the new password and expiry."""
    el = etree.Element(graphics.tag, graphics.attrib)
    for child in graphics:
        if isinstance(child.tag, str) and child.tag == "listen":
            el.append(etree.fromstring(etree.tostring(child)))
    if el.get("type") == "vnc" and len(password) > VNC_PASSWORD_BYTES:
        password = password[:VNC_PASSWORD_BYTES]  # what a VNC client sends of it anyway
    el.set("passwd", password)
    el.set("passwdValidTo", valid_to(ttl))
    if conn_action and el.get("type") == "spice":
        el.set("connected", conn_action)
    return el


async def set_ticket(
    svc: Services,
    vm: Vm,
    password: str,
    ttl: int,
    conn_action: str | None = "disconnect",
    params: Mapping[str, str] | None = None,
    graphics_type: str | None = None,
) -> None:
    """Set the console password of ``vm`` (the caller holds the VM's lock)."""
    check_ttl(ttl, svc.config.max_ticket_ttl)
    params = dict(params or {})
    if conn_action is not None and conn_action not in CONN_ACTIONS:
        raise invalid_parameter("existingConnAction", f"expected one of {list(CONN_ACTIONS)}")
    disconnect = params.get("disconnectAction")
    if disconnect is not None and disconnect not in DISCONNECT_ACTIONS:
        raise invalid_parameter("params.disconnectAction",
                                f"expected one of {list(DISCONNECT_ACTIONS)}")
    try:
        xml = await svc.domain_xml(vm.id)
    except libvirt.libvirtError as exc:
        raise libvirt_failure(exc, TicketError, "cannot read the domain") from None
    domain = etree.fromstring(xml.encode("utf-8"))
    query = "devices/graphics" + (f"[@type='{graphics_type}']" if graphics_type else "")
    graphics = domain.find(query)
    if graphics is None:
        raise TicketError(f"no {graphics_type or 'graphics'} device configured")
    device = etree.tostring(ticket_element(graphics, password, ttl, conn_action),
                            encoding="unicode")
    await svc.hook("before_vm_set_ticket", xml, vm, env=params)
    try:
        await svc.conn.call_domain(
            vm.id, lambda d: d.updateDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE),
            name="updateDeviceFlags")
    except libvirt.libvirtError as exc:
        raise libvirt_failure(exc, TicketError, "cannot set the console ticket") from None
    if disconnect:
        vm.ticket_disconnect_action = disconnect
    log.info("vmId=%s: %s ticket set, valid for %ds", vm.id, graphics.get("type"), ttl)
    await svc.after_hook("after_vm_set_ticket", xml, vm, env=params)
