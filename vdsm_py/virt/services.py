"""What the VM operations need, passed in explicitly: libvirt, settings, hooks.

Owns :class:`Services` (the libvirt connection, the ``[virt]`` settings and the optional
hook runner) and the two helpers every operation uses: running a hook point over an XML
document with VDSM's semantics (``before_*`` errors fail the operation; ``after_*`` errors
are logged and the operation stands) and turning a libvirt error into the VDSM error of
the operation, carrying libvirt's own message. No state of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import libvirt

from vdsm_py.config import VirtConfig
from vdsm_py.errors import NoSuchVM, VdsmError
from vdsm_py.virt.libvirtconn import LibvirtConnection, is_no_domain, message

if TYPE_CHECKING:
    from vdsm_py.hooks import HookRunner
    from vdsm_py.virt.vm import Vm

log = logging.getLogger("vdsm_py.virt")


@dataclass(frozen=True)
class Services:
    conn: LibvirtConnection
    config: VirtConfig
    hooks: HookRunner | None = None

    def wants_hook(self, point: str) -> bool:
        """Whether ``point`` has scripts (so that callers skip fetching XML for nothing)."""
        return self.hooks is not None and self.hooks.has_scripts(point)

    async def hook(
        self, point: str, xml: str, vm: Vm, env: Mapping[str, str] | None = None
    ) -> str:
        """Run ``point`` over ``xml``; the XML as the scripts left it.

        Errors of points whose policy fails the operation raise HookError (1500); others
        are logged by the runner. ``after_*`` callers use :meth:`after_hook`.
        """
        if self.hooks is None:
            return xml
        return await self.hooks.run_xml(point, xml, vm_id=vm.id, custom=vm.custom,
                                        env=env or {})

    async def after_hook(
        self, point: str, xml: str, vm: Vm, env: Mapping[str, str] | None = None
    ) -> None:
        """An ``after_*`` point: never fails the operation that already happened."""
        if self.hooks is None:
            return
        try:
            await self.hooks.run_xml(point, xml, vm_id=vm.id, custom=vm.custom,
                                     env=env or {}, raise_on_error=False)
        except (VdsmError, OSError) as exc:
            log.error("vmId=%s: %s hook failed: %s", vm.id, point, exc)

    async def domain_xml(self, vm_id: str, *, secure: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        return await self.conn.call_domain(vm_id, lambda d: d.XMLDesc(flags), name="XMLDesc")


def libvirt_failure(exc: BaseException, cls: type[VdsmError], what: str) -> VdsmError:
    """The VDSM error for a failed libvirt call: noVM when the domain is gone."""
    if is_no_domain(exc):
        return NoSuchVM()
    return cls(f"{what}: {message(exc)}")
