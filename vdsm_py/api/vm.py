"""The ``VM`` verbs: create, destroy, power operations, console tickets, devices, stats.

Thin by design: each verb hands its (schema-checked) parameters to the
:class:`~vdsm_py.virt.manager.VmManager` and returns VDSM's wire shape. Every verb is a
coroutine on the loop: the manager never blocks it (libvirt calls go through the worker
pool). Must not touch libvirt itself.
"""

from __future__ import annotations

from typing import Any

from vdsm_py.virt.manager import VmManager

# VDSM answers pause and cont with an empty vmList.
_RUNNING_STATE_CHANGE: dict[str, Any] = {"vmList": {}}


class VmApi:
    def __init__(self, manager: VmManager) -> None:
        self.manager = manager

    async def create(self, vm_id: str, vm_params: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.create(vm_id, vm_params)

    async def destroy(self, vm_id: str, graceful_attempts: int = 1) -> bool:
        await self.manager.destroy(vm_id, graceful_attempts)
        return True

    async def shutdown(
        self,
        vm_id: str,
        delay: int | None = None,
        message: str | None = None,
        reboot: bool = False,
        timeout: int | None = None,
        force: bool = False,
    ) -> bool:
        await self.manager.shutdown(vm_id, delay=delay, message=message, reboot=reboot,
                                    timeout=timeout, force=force)
        return True

    async def reboot(self, vm_id: str, timeout: int | None = None, force: bool = False) -> bool:
        await self.manager.shutdown(vm_id, reboot=True, timeout=timeout, force=force)
        return True

    async def pause(self, vm_id: str) -> dict[str, Any]:
        await self.manager.pause(vm_id)
        return dict(_RUNNING_STATE_CHANGE)

    async def cont(self, vm_id: str) -> dict[str, Any]:
        await self.manager.cont(vm_id)
        return dict(_RUNNING_STATE_CHANGE)

    async def get_stats(self, vm_id: str) -> list[dict[str, Any]]:
        return await self.manager.get_stats(vm_id)

    async def set_ticket(
        self,
        vm_id: str,
        password: str,
        ttl: int = 120,
        existing_conn_action: str = "disconnect",
        params: dict[str, str] | None = None,
    ) -> bool:
        await self.manager.set_ticket(vm_id, password, ttl, existing_conn_action, params)
        return True

    async def hotplug_nic(self, vm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.hotplug_nic(vm_id, params)

    async def hotunplug_nic(self, vm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.hotunplug_nic(vm_id, params)

    async def hotplug_disk(self, vm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.hotplug_disk(vm_id, params)

    async def hotunplug_disk(self, vm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.hotunplug_disk(vm_id, params)

    async def set_balloon_target(self, vm_id: str, target: int) -> bool:
        await self.manager.set_balloon_target(vm_id, target)
        return True

    async def update_device(self, vm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.manager.update_device(vm_id, params)
