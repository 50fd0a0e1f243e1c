"""What the engine's parts share: the in-memory view, the store, the monitors, event records.

The engine keeps every host and VM in memory (scheduling and event handling never wait for
the database) and writes each change through to the store. Changes wake
:meth:`Context.wait_until` waiters. Must not contain business rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine_lite.config import EngineConfig
from engine_lite.errors import NotFound
from engine_lite.models import Host, Vm
from engine_lite.monitor import HostMonitor
from engine_lite.store import Store

log = logging.getLogger("engine_lite")


@dataclass
class Context:
    config: EngineConfig
    store: Store
    hosts: dict[str, Host] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    monitors: dict[str, HostMonitor] = field(default_factory=dict)
    _tick: asyncio.Event = field(default_factory=asyncio.Event)

    def host(self, ref: str) -> Host:
        for host in self.hosts.values():
            if ref in (host.id, host.name):
                return host
        raise NotFound(f"no host named {ref!r}")

    def vm(self, ref: str) -> Vm:
        for vm in self.vms.values():
            if ref in (vm.id, vm.name):
                return vm
        raise NotFound(f"no VM named {ref!r}")

    async def save_host(self, host: Host) -> None:
        await self.store.run(self.store.repo.save_host, host)
        self.changed()

    async def save_vm(self, vm: Vm) -> None:
        await self.store.run(self.store.repo.save_vm, vm)
        self.changed()

    async def record(self, severity: str, kind: str, message: str, *,
                     host_id: str | None = None, vm_id: str | None = None) -> None:
        level = {"info": logging.INFO, "warning": logging.WARNING}.get(severity, logging.ERROR)
        log.log(level, "%s: %s", kind, message)
        await self.store.run(self.store.repo.add_event, severity, kind, message,
                             host_id=host_id, vm_id=vm_id)

    def changed(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout:g} s")
            tick = self._tick
            try:
                await asyncio.wait_for(tick.wait(), remaining)
            except TimeoutError:
                pass
