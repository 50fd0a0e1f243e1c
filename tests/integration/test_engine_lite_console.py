"""engine-lite's console ticket on real QEMU: the ticket it hands out opens the VM's VNC
console, and nothing else does.

One ``vdsmd --dev`` host on a private libvirtd (TCG), enrolled by the engine; the engine
starts a VM there (its definition: memory, one vCPU, a VNC display, no disk: QEMU's VNC
server runs whatever the guest does) and asks for a ticket as oVirt's console flow does.
The answer (host, port, password) is used by a real VNC client
(:mod:`tests.integration.rfb`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from engine_lite.engine import Engine
from engine_lite.errors import EngineError
from engine_lite.models import Vm

from tests.integration import rfb
from tests.integration.engine_lite_support import (
    RUNNING,
    WAIT,
    DevHost,
    enroll,
    running_engine,
)
from tests.integration.libvirtd import LibvirtdInstance
from tests.integration.qemu_host import start_qemu_host

pytestmark = pytest.mark.slow

START_TIMEOUT = 120  # TCG on 2 busy cores


@pytest.fixture
async def console_vm(libvirtd: LibvirtdInstance,
                     tmp_path: Path) -> AsyncIterator[tuple[Engine, Vm]]:
    qemu = await asyncio.to_thread(start_qemu_host, tmp_path / "host", libvirtd)
    try:
        async with running_engine(tmp_path / "engine") as engine:
            await enroll(engine, "qemu1", DevHost(qemu.root, qemu.port, qemu.daemon))
            vm = await engine.vms.create("console-vm", 128)
            await engine.vms.start("console-vm")
            try:
                await engine.ctx.wait_until(
                    lambda: vm.status in RUNNING and vnc(vm) is not None, START_TIMEOUT)
                yield engine, vm
            finally:
                with contextlib.suppress(EngineError):
                    await engine.vms.stop("console-vm")
    finally:
        await asyncio.to_thread(qemu.close)


def vnc(vm: Vm) -> dict[str, Any] | None:
    """The VM's VNC display as its host last reported it, once QEMU has its port (the
    host reports port -1 until then)."""
    displays: list[dict[str, Any]] = vm.display if isinstance(vm.display, list) else []
    return next((d for d in displays
                 if d.get("type") == "vnc" and int(d.get("port") or -1) > 0), None)


async def login(ticket: dict[str, Any], password: str | None) -> rfb.VncLogin:
    return await asyncio.to_thread(rfb.vnc_login, ticket["host"], int(ticket["port"]),
                                   password)


async def test_engine_ticket_opens_the_vnc_console_and_only_with_its_password(
        console_vm: tuple[Engine, Vm]) -> None:
    engine, vm = console_vm
    ticket = await engine.vms.ticket("console-vm")
    assert ticket["host"] == "127.0.0.1" and ticket["hostName"] == "qemu1"
    assert ticket["type"] == "vnc" and int(ticket["port"]) == int(vnc(vm)["port"])  # type: ignore[index]
    assert ticket["ttl"] == 120  # oVirt's default

    locked = await login(ticket, None)
    assert rfb.SECURITY_VNC_AUTH in locked.security_types and not locked.accepted
    assert (await login(ticket, ticket["password"])).accepted
    assert not (await login(ticket, "wrong-password")).accepted

    # A new ticket replaces the old one: the first password no longer opens it.
    second = await engine.vms.ticket("console-vm")
    assert second["password"] != ticket["password"]
    assert not (await login(second, ticket["password"])).accepted
    assert (await login(second, second["password"])).accepted


async def test_expired_ticket_is_refused(console_vm: tuple[Engine, Vm]) -> None:
    engine, _ = console_vm
    ticket = await engine.vms.ticket("console-vm", ttl=2)
    assert (await login(ticket, ticket["password"])).accepted
    deadline = asyncio.get_running_loop().time() + WAIT
    while (await login(ticket, ticket["password"])).accepted:  # expiry is QEMU's clock
        assert asyncio.get_running_loop().time() < deadline, "the ticket never expired"
        await asyncio.sleep(0.5)
    assert not (await login(ticket, ticket["password"])).accepted
