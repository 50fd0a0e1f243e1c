"""engine-lite against real vdsm_py daemons on loopback, each with its own port and PKI.

The engine enrolls them (CSR made in the host's PKI dir by ``vdsm-tool``, signed by the
engine CA, installed, daemon restarted), monitors them over mTLS, places VMs, and follows
a host that dies and comes back. Timings are shrunk through :class:`EngineConfig`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from engine_lite.engine import Engine
from engine_lite.errors import (
    AlreadyExists,
    EnrollmentError,
    HostUnreachable,
    NoHostAvailable,
    NotFound,
)
from engine_lite.models import HostStatus
from engine_lite.pki import serial_text

from tests.integration.engine_lite_support import (
    REPO,
    RUNNING,
    UP,
    WAIT,
    DevHost,
    dev_hosts,
    enroll,
    fast_config,
    running_engine,
    vm_verbs_available,
)
from vdsm_py.client import Client
from vdsm_py.pki.issue import dev_ca_paths, issue_cert, load_ca
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.transport.tls import client_context


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[list[DevHost]]:
    async with dev_hosts(tmp_path, 2) as started:
        yield started


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with running_engine(tmp_path / "engine") as eng:
        yield eng


async def test_enrolled_hosts_come_up_and_trust_only_the_engine(
        engine: Engine, hosts: list[DevHost]) -> None:
    keys_before = [h.pki.key.read_bytes() for h in hosts]
    dev_ca = load_ca(dev_ca_paths(hosts[0].pki.root))
    await enroll(engine, "h1", hosts[0])
    await enroll(engine, "h2", hosts[1])

    assert [h.effective_status for h in engine.list_hosts()] == [UP, UP]
    assert all(h.mem_mib > 0 for h in engine.list_hosts())
    # The key never changed (it was never regenerated nor copied); the cert is the engine's.
    assert [h.pki.key.read_bytes() for h in hosts] == keys_before
    assert hosts[0].pki.cacert.read_bytes() == engine.ca.cacert_pem
    # A client holding a certificate of the host's former (development) CA is refused now.
    former = issue_cert(dev_ca, "old-client", purpose="client")
    tmp = hosts[0].root / "former"
    from vdsm_py.pki.issue import write_identity
    write_identity(PkiPaths(tmp), former, dev_ca.cert)
    ctx = client_context(PkiPaths(tmp).cert, PkiPaths(tmp).key, hosts[0].pki.cacert)
    with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)):
        client = await Client.connect("127.0.0.1", hosts[0].port, ssl_context=ctx, timeout=5)
        with contextlib.suppress(Exception):
            await client.call("Host.ping2", timeout=5)
            await client.close()
        raise ConnectionError("not refused at the handshake")  # pragma: no cover
    events = [e.message for e in await engine.events()]
    assert any("h1: Initializing -> Up" in m for m in events)


async def test_dead_host_goes_connecting_then_nonresponsive_and_returns_up(
        engine: Engine, hosts: list[DevHost]) -> None:
    await enroll(engine, "h1", hosts[0])
    await enroll(engine, "h2", hosts[1])
    seen: list[HostStatus] = []
    h1 = engine.host("h1")

    def watch() -> bool:
        if not seen or seen[-1] != h1.status:
            seen.append(h1.status)
        return h1.status == HostStatus.NON_RESPONSIVE

    hosts[0].kill()
    await engine.ctx.wait_until(watch, WAIT)
    assert seen[-2:] == [HostStatus.CONNECTING, HostStatus.NON_RESPONSIVE]
    # The other host is unaffected and still answers through the engine.
    assert engine.host("h2").status == UP
    assert await engine.ctx.monitors[engine.host("h2").id].call("Host.ping2") is not None

    await hosts[0].start()
    await engine.wait_host_status("h1", UP, WAIT)


async def test_vms_are_spread_and_ha_vm_recovers_after_host_restart(
        engine: Engine, hosts: list[DevHost]) -> None:
    await enroll(engine, "h1", hosts[0])
    await enroll(engine, "h2", hosts[1])
    if not await vm_verbs_available(engine, "h1"):
        pytest.skip("the daemon has no VM verbs yet")
    a = await engine.vms.create("vm-a", 128, ha=True)
    b = await engine.vms.create("vm-b", 128)
    await engine.vms.start("vm-a")
    await engine.vms.start("vm-b")
    assert {a.host_id, b.host_id} == {engine.host("h1").id, engine.host("h2").id}
    await engine.ctx.wait_until(lambda: a.status in RUNNING and b.status in RUNNING, WAIT)

    victim = next(h for h, name in zip(hosts, ("h1", "h2"), strict=True)
                  if engine.host(name).id == a.host_id)
    survivor_id = b.host_id
    victim.kill()
    await engine.ctx.wait_until(lambda: a.status == "Unknown", WAIT)
    assert b.status in RUNNING and b.host_id == survivor_id
    c = await engine.vms.create("vm-c", 128)
    await engine.vms.start("vm-c")
    assert c.host_id == survivor_id  # the only host Up

    await victim.start()
    # The HA VM is Up again (recovered by the host, or restarted by the engine).
    await engine.ctx.wait_until(lambda: a.status in RUNNING, WAIT)
    await engine.vms.stop("vm-b")
    assert b.status == "Down" and b.host_id is None


async def test_engine_restart_converges_from_hosts(
        tmp_path: Path, hosts: list[DevHost]) -> None:
    config = fast_config(tmp_path / "engine")
    first = Engine(config, agent_env={"PYTHONPATH": str(REPO)})
    await first.start()
    try:
        await enroll(first, "h1", hosts[0])
        has_vms = await vm_verbs_available(first, "h1")
        if has_vms:
            vm = await first.vms.create("vm-a", 128)
            await first.vms.start("vm-a")
    finally:
        await first.close()
    second = Engine(config)
    await second.start()
    try:
        await second.wait_host_status("h1", UP, WAIT)
        if has_vms:
            again = second.ctx.vm("vm-a")
            await second.ctx.wait_until(lambda: again.status in RUNNING, WAIT)
            assert again.id == vm.id
    finally:
        await second.close()


async def test_restarted_engine_places_nothing_on_a_host_it_has_not_reached_again(
        tmp_path: Path, hosts: list[DevHost]) -> None:
    state = tmp_path / "engine"
    async with running_engine(state) as first:
        await enroll(first, "h1", hosts[0])
        await enroll(first, "h2", hosts[1])
    hosts[0].freeze()  # h1 was Up when the engine stopped; now it answers nothing
    async with running_engine(state) as second:
        assert second.host("h1").status == HostStatus.CONNECTING
        assert second.host("h1").status_reason == "the engine restarted"
        await second.wait_host_status("h2", UP, WAIT)
        vm = await second.vms.create("placed", 64)
        await second.vms.start("placed")  # even spread would pick h1 if it still looked Up
        assert vm.host_id == second.host("h2").id


async def test_unreachable_host_is_refused_and_nothing_registered(
        engine: Engine, hosts: list[DevHost]) -> None:
    hosts[0].proc.close()
    with pytest.raises(HostUnreachable, match="cannot reach a host at 127.0.0.1"):
        await enroll(engine, "h1", hosts[0])
    assert engine.list_hosts() == []
    assert await engine.ctx.store.run(engine.ctx.store.repo.list_hosts) == []


async def test_host_keeping_a_foreign_certificate_is_refused_and_restored(
        engine: Engine, hosts: list[DevHost], tmp_path: Path) -> None:
    before = (hosts[0].pki.cert.read_bytes(), hosts[0].pki.cacert.read_bytes())

    async def no_restart() -> None:  # the daemon keeps serving its old certificate
        return None

    engine.config = dataclasses.replace(engine.config, enroll_timeout=5.0)
    with pytest.raises(EnrollmentError, match="not signed by the engine CA"):
        await engine.add_host("h1", "127.0.0.1", hosts[0].port, hosts[0].agent(),
                              apply=no_restart)
    assert engine.list_hosts() == []
    assert (hosts[0].pki.cert.read_bytes(), hosts[0].pki.cacert.read_bytes()) == before


async def test_bad_input_gets_clear_errors(engine: Engine, hosts: list[DevHost]) -> None:
    await enroll(engine, "h1", hosts[0])
    with pytest.raises(AlreadyExists, match="host named 'h1'"):
        await enroll(engine, "h1", hosts[1])
    with pytest.raises(AlreadyExists, match="already registered as h1"):
        await enroll(engine, "other", hosts[0])
    with pytest.raises(NotFound, match="no host named 'nope'"):
        await engine.set_maintenance("nope", True)
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        await engine.vms.start("ghost")
    await engine.vms.create("big", 64 * 1024 * 1024)
    with pytest.raises(AlreadyExists, match="VM named 'big'"):
        await engine.vms.create("big", 128)
    with pytest.raises(NoHostAvailable, match="h1: not enough memory") as err:
        await engine.vms.start("big")
    assert set(err.value.details["filtered"]) == {"h1"}
    await engine.set_maintenance("h1", True)
    await engine.vms.create("small", 64)
    with pytest.raises(NoHostAvailable, match="h1: in maintenance"):
        await engine.vms.start("small")
    assert engine.ctx.vm("small").status == "Down"


async def test_renewed_certificate_is_presented_after_apply(
        engine: Engine, hosts: list[DevHost]) -> None:
    await enroll(engine, "h1", hosts[0])
    old = engine.host("h1").cert_serial
    pid = hosts[0].proc.pid
    await engine.renew_host_cert("h1")
    host = await engine.wait_host_status("h1", UP, WAIT)
    assert host.cert_serial != old
    assert hosts[0].proc.pid == pid and hosts[0].proc.proc.poll() is None  # no restart
    # New connections get the renewed certificate (the engine's own stays connected).
    _, writer = await asyncio.open_connection("127.0.0.1", hosts[0].port, ssl=engine._ssl)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    assert serial_text(x509.load_der_x509_certificate(der).serial_number) == host.cert_serial
