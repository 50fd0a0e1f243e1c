"""``vdsmd`` with a VM.create cut down to what any VM.create must do: the floor of a create.

Run by ``bench/vms.py`` (never by the daemon or the tests), beside the real daemon and in
the same rounds, to answer one question with a figure: how much of the create overhead is
the VM layer, and how much is the price of any create over RPC on this machine?

The VM.create here keeps the parts the issue requires of every create and drops the rest:

- kept: the request over mutual TLS, STOMP and JSON-RPC with its schema check; one
  ``createXML`` on the worker pool through the libvirt adapter (with its timeout); the
  ``|virt|VM_status|<vmId>`` event announcing the VM (Powering up) once libvirt started it;
  libvirt's own lifecycle event reaching the loop;
- dropped: the VM object and its lock and timers, parsing and checking the XML, our
  metadata, hook lookups, storage drives, the wait for an early libvirt refusal.

So ``floor / raw`` is what the transport, one worker hop and one event cost against a raw
``createXML``; ``daemon / floor`` is what the VM layer adds.

    python bench/floor_vmcreate.py --dev ROOT --port PORT  (as vdsmd)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdsm_py.cli import vdsmd
from vdsm_py.virt import VmManager
from vdsm_py.virt.status import VmStatus


async def floor_create(self: VmManager, vm_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """VM.create's floor: answer WaitForLaunch, createXML on a worker, then the event."""
    xml = params["xml"]

    async def start() -> None:
        await self.svc.conn.call(lambda conn: conn.createXML(xml, 0), name="createXML")
        self.events.publish(f"|virt|VM_status|{vm_id}",
                            {vm_id: {"vmId": vm_id, "status": VmStatus.POWERING_UP.value}})

    self._spawn(start(), f"start-{vm_id}")
    return {"vmId": vm_id, "status": VmStatus.WAIT_FOR_LAUNCH.value}


_on_lifecycle = VmManager.on_lifecycle


def floor_on_lifecycle(self: VmManager, vm_id: str, event: int, detail: int) -> None:
    """libvirt's events of the floor's own domains reach here and stop (no adoption)."""
    if vm_id in self.vms:
        _on_lifecycle(self, vm_id, event, detail)


if __name__ == "__main__":
    VmManager.create = floor_create  # type: ignore[method-assign]
    VmManager.on_lifecycle = floor_on_lifecycle  # type: ignore[method-assign]
    sys.exit(vdsmd.main())
