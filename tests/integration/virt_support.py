"""A VM stack for tests: a real VmManager behind the real Dispatcher, called with JSON.

:class:`VirtHarness` wires what the daemon wires for VMs — executor, event bus, libvirt
connection (any URI: ``test:///default`` here, a private libvirtd in the real-QEMU tests),
``VmManager``, the ``VM`` and ``Host`` VM verbs and the schema — and offers:

- ``await h.call("VM.create", vmID=..., vmParams=...)``: a JSON-RPC request encoded,
  dispatched and decoded like on the wire; errors raise :class:`RpcError` with the code;
- ``h.events``: every published event with the monotonic time it was published;
- ``await h.wait_status(vm_id, "Up")``: the VM_status event announcing that status.

Everything created is destroyed at :meth:`close` (the test driver's state outlives a
connection within one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt
import orjson

from vdsm_py.api.host_vms import HostVmsApi
from vdsm_py.api.vm import VmApi
from vdsm_py.config import VirtConfig
from vdsm_py.errors import VdsmError
from vdsm_py.events import Event, EventBus
from vdsm_py.executor import Executor
from vdsm_py.rpc.dispatch import CallContext, Dispatcher
from vdsm_py.rpc.schema import Schema
from vdsm_py.virt.libvirtconn import ensure_event_loop
from vdsm_py.virt.manager import VmManager

log = logging.getLogger("tests.virt")
_ids = itertools.count()


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class VirtHarness:
    config: VirtConfig
    hooks: Any = None
    executor: Executor = field(init=False)
    bus: EventBus = field(init=False)
    manager: VmManager = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    events: list[tuple[float, Event]] = field(default_factory=list)
    _waiters: list[tuple[str, str, asyncio.Future[float]]] = field(default_factory=list)

    async def start(self, *, recover: bool = True) -> VirtHarness:
        self.executor = Executor(4, 30, name="virt-test")
        self.bus = EventBus(asyncio.get_running_loop())
        self.bus.subscribe(self._on_event)
        self.manager = VmManager.build(self.config, self.executor, self.bus, self.hooks)
        self.dispatcher = Dispatcher(Schema.load(), self.executor, call_timeout=30)
        self.dispatcher.register("VM", VmApi(self.manager))
        self.dispatcher.register("Host", HostVmsApi(self.manager))
        await self.manager.start()
        if recover:
            self.dispatcher.recovering = True
            try:
                await self.manager.recover()
            finally:
                self.dispatcher.recovering = False
        return self

    async def close(self, *, destroy: bool = True) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._close(destroy)), 15)
        except TimeoutError:  # show what is stuck rather than hang the whole run
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            raise

    async def _close(self, destroy: bool) -> None:
        if destroy:
            for vm in list(self.manager.vms.values()):
                if not vm.external:
                    try:
                        await self.manager.destroy(vm.id, 0)
                    except (VdsmError, libvirt.libvirtError) as exc:
                        log.warning("cleanup: cannot destroy %s: %s", vm.id, exc)
        await self.manager.stop()
        self.executor.close()

    # -- calls ---------------------------------------------------------------------------

    async def call(self, method: str, **params: Any) -> Any:
        request = {"jsonrpc": "2.0", "method": method, "params": params,
                   "id": f"req-{next(_ids)}"}
        raw = await self.dispatcher.handle(orjson.dumps([request]),
                                           CallContext(client_id="test"))
        assert raw is not None
        response = orjson.loads(raw)
        if isinstance(response, list):
            (response,) = response
        if "error" in response:
            raise RpcError(response["error"]["code"], response["error"]["message"])
        return response["result"]

    # -- events --------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        now = time.monotonic()
        self.events.append((now, event))
        for vm_id, status, fut in list(self._waiters):
            body = event.params.get(vm_id)
            if body and body.get("status") == status and not fut.done():
                fut.set_result(now)

    def statuses(self, vm_id: str) -> list[str]:
        """The statuses announced for ``vm_id``, in order."""
        return [e.params[vm_id]["status"] for _, e in self.events if vm_id in e.params]

    def last_event(self, vm_id: str) -> dict[str, Any]:
        return [e.params[vm_id] for _, e in self.events if vm_id in e.params][-1]

    async def wait_status(self, vm_id: str, status: str, timeout: float = 10) -> float:
        """When the VM_status event announcing ``status`` was published (monotonic)."""
        for at, e in self.events:
            if e.params.get(vm_id, {}).get("status") == status:
                return at
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        entry = (vm_id, status, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove(entry)


def plain_vm(name: str = "vm", **extra: Any) -> tuple[str, dict[str, Any]]:
    """A fresh vmID and a small plain spec (two NICs, a disk, a VNC console)."""
    vm_id = str(uuid.uuid4())
    n = int(vm_id[:4], 16)
    params: dict[str, Any] = {
        "vmName": f"{name}-{vm_id[:8]}",
        "memSize": 256,
        "smp": "2",
        "devices": [
            {"type": "interface", "macAddr": f"00:1a:4a:{n >> 8:02x}:{n & 0xff:02x}:01",
             "network": "ovirtmgmt"},
            {"type": "interface", "macAddr": f"00:1a:4a:{n >> 8:02x}:{n & 0xff:02x}:02",
             "network": "default", "device": "network"},
            {"type": "disk", "path": f"/var/tmp/{vm_id}.img"},
            {"type": "graphics", "device": "vnc"},
        ],
    }
    params.update(extra)
    return vm_id, params


@contextlib.asynccontextmanager
async def running_harness(config: VirtConfig, **start: Any) -> AsyncIterator[VirtHarness]:
    """A started :class:`VirtHarness`, closed on the way out even when a test fails."""
    harness = await VirtHarness(config).start(**start)
    try:
        yield harness
    finally:
        await harness.close()


@contextlib.contextmanager
def driver_connection() -> Iterator[libvirt.virConnect]:
    """A separate connection to this process's test driver: what libvirt itself says.

    test:///default forgets its domains when its last connection closes, so holding one
    also keeps the driver's state across harnesses.
    """
    ensure_event_loop()
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()
