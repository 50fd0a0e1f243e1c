"""The ``Host`` verbs about VMs: getVMList, getVMFullList, getAllVmStats, dumpxmls.

Registered on the ``Host`` namespace next to the host's own verbs (``api/host.py``); all
answer 99 while recovery runs (their schema says so per verb). Thin: the
:class:`~vdsm_py.virt.manager.VmManager` answers from memory, except ``dumpxmls`` which
asks libvirt through the worker pool. ``getAllVmStats`` returns JSON already encoded
(:class:`orjson.Fragment`), which the dispatcher's encoder copies as is.
"""

from __future__ import annotations

from typing import Any

import orjson

from vdsm_py.virt.manager import VmManager


class HostVmsApi:
    """Method names follow the dispatcher's snake_case rule (``getVMList`` → ``get_vmlist``)."""

    def __init__(self, manager: VmManager) -> None:
        self.manager = manager

    async def get_vmlist(
        self, full_status: bool = False, vm_list: list[str] | None = None,
        only_uuid: bool = False,
    ) -> list[Any]:
        if full_status:
            return self.manager.full_list(vm_list)
        records = self.manager.vm_list(vm_list)
        if only_uuid:
            return [r["vmId"] for r in records]
        return records

    async def get_vmfull_list(self, vm_list: list[str] | None = None) -> list[dict[str, Any]]:
        return self.manager.full_list(vm_list)

    async def get_all_vm_stats(self) -> orjson.Fragment | list[dict[str, Any]]:
        return await self.manager.all_stats()

    async def dumpxmls(self, vm_list: list[str] | None = None) -> dict[str, str]:
        return await self.manager.dumpxmls(vm_list or [])
