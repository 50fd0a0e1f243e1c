"""The engine: composition root and host lifecycle (enrollment, monitoring, maintenance,
removal, certificate renewal), the sink of every host monitor, and the event log.

Start: open the database, ensure the CA, load hosts and VMs, start one monitor per host
(the engine's view converges by re-reading every host), renew certificates periodically.
VM operations live in :class:`engine_lite.vms.VmManager` (``engine.vms``), fencing of
NonResponsive hosts in :class:`engine_lite.fencing.Fencer` (``engine.fencer``). Must not speak
STOMP or SQL itself: monitors and the repository do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from engine_lite.config import EngineConfig
from engine_lite.context import Context
from engine_lite.errors import (
    AlreadyExists,
    EngineError,
    EnrollmentError,
    HostUnreachable,
    InvalidInput,
    InvalidState,
)
from engine_lite.fencing import Fencer, check_agent
from engine_lite.hostside import LocalHostAgent
from engine_lite.models import VM_DOWN, Event, Host, HostStatus
from engine_lite.monitor import HostMonitor
from engine_lite.pki import EngineCa, needs_renewal
from engine_lite.repo import Repository, SqliteRepository
from engine_lite.states import Trigger, next_status
from engine_lite.store import Store
from engine_lite.vmdef import check_name
from engine_lite.vms import VmManager

log = logging.getLogger("engine_lite")

Applier = Callable[[], Awaitable[None]]


class Engine:
    def __init__(self, config: EngineConfig, *, repo: Repository | None = None,
                 agent_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.ca = EngineCa(config.ca_dir, config.identity_dir)
        self._repo = repo
        self._agent_env = agent_env or {}
        self._appliers: dict[str, Applier] = {}  # host id -> how to apply certs (tests)
        self._renewer: asyncio.Task[None] | None = None
        self.ctx: Context
        self.vms: VmManager

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        repo = self._repo or SqliteRepository(cfg.db_path)
        store = Store(repo)
        self.ctx = Context(cfg, store)
        await store.run(self.ca.ensure)
        self._ssl = self.ca.client_context()
        cluster = await store.run(repo.default_cluster)
        self.vms = VmManager(self.ctx, cluster.id)
        self.fencer = Fencer(self.ctx, self.vms, self._ssl, _serials)
        self.cluster_id = cluster.id
        for host in await store.run(repo.list_hosts):
            self.ctx.hosts[host.id] = host
        for vm in await store.run(repo.list_vms):
            self.ctx.vms[vm.id] = vm
        for host in list(self.ctx.hosts.values()):
            # No session yet: a stored Up must not let a VM be placed on the host before
            # its monitor has connected again.
            await self._transition(host.id, Trigger.ENGINE_STARTED, "the engine restarted")
            self._start_monitor(host)
        self._renewer = asyncio.create_task(self._renew_loop(), name="cert renewal")
        await self.vms.recover_pending()
        log.info("engine-lite started: %d hosts, %d VMs, state in %s",
                 len(self.ctx.hosts), len(self.ctx.vms), cfg.state_dir)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.fencer.close()
        await self.vms.close()
        await asyncio.gather(*(m.stop() for m in self.ctx.monitors.values()))
        self.ctx.monitors.clear()
        await asyncio.to_thread(self.ctx.store.close)

    # -- hosts --------------------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        return sorted(self.ctx.hosts.values(), key=lambda h: h.name)

    def host(self, ref: str) -> Host:
        return self.ctx.host(ref)

    async def add_host(self, name: str, address: str, port: int, agent: LocalHostAgent, *,
                       apply: Applier | None = None, wait: bool = True) -> Host:
        """Enroll a host; on failure nothing stays registered and its certs are restored."""
        check_name("host", name)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidInput(f"invalid port {port!r}")
        for other in self.ctx.hosts.values():
            if other.name == name:
                raise AlreadyExists(f"a host named {name!r} already exists")
            if (other.address, other.port) == (address, port):
                raise AlreadyExists(f"{address}:{port} is already registered as {other.name}")
        agent.check()
        await self._probe(address, port)
        backup = agent.backup()
        csr = await agent.make_csr()
        signed = self.ca.sign_host(csr, self.config.host_cert_days)
        host = Host(str(uuid.uuid4()), name, self.cluster_id, address, port,
                    agent=agent.spec, cert_serial=signed.serial,
                    cert_not_after=signed.not_after)
        await self.ctx.store.run(self.ctx.store.repo.add_host, host)
        self.ctx.hosts[host.id] = host
        if apply is not None:
            self._appliers[host.id] = apply
        await self.ctx.record("info", "host_installing", f"enrolling host {name} at "
                              f"{address}:{port} (certificate {signed.serial})", host_id=host.id)
        try:
            await agent.install(signed.cert_pem, signed.cacert_pem)
            await (apply or agent.apply)()
            self._start_monitor(host)
            if wait:
                await self.ctx.wait_until(lambda: host.status == HostStatus.UP,
                                          self.config.enroll_timeout)
        except (EngineError, TimeoutError, OSError) as exc:
            reason = host.status_reason or getattr(exc, "message", str(exc))
            await self._unregister(host)
            restored = await self._restore(agent, backup, apply)
            await self.ctx.record("error", "host_install_failed",
                                  f"host {name} not added: {reason}")
            raise EnrollmentError(
                f"host {name} was not added: it did not come up with the engine's certificate "
                f"within {self.config.enroll_timeout:g} s ({reason}); {restored}",
                host=name) from None
        return host

    async def _probe(self, address: str, port: int) -> None:
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                _, writer = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise HostUnreachable(f"cannot reach a host at {address}:{port}: {why}; "
                                  "nothing was registered") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _restore(self, agent: LocalHostAgent, backup: Any, apply: Applier | None) -> str:
        try:
            await agent.restore(backup)
            await (apply or agent.apply)()
        except (EngineError, OSError) as exc:
            return f"restoring the host's previous certificates failed too: {exc}"
        return "the host's previous certificates were restored"

    async def _unregister(self, host: Host) -> None:
        monitor = self.ctx.monitors.pop(host.id, None)
        if monitor is not None:
            await monitor.stop()
        self.ctx.hosts.pop(host.id, None)
        self._appliers.pop(host.id, None)
        await self.ctx.store.run(self.ctx.store.repo.remove_host, host.id)
        self.ctx.changed()

    async def remove_host(self, ref: str) -> None:
        host = self.ctx.host(ref)
        running = [vm.name for vm in self.ctx.vms.values()
                   if vm.host_id == host.id and vm.status != VM_DOWN]
        if running:
            raise InvalidState(f"host {host.name} still runs VM(s) {', '.join(sorted(running))}; "
                               "stop them first")
        await self._unregister(host)
        await self.ctx.record("info", "host_removed", f"host {host.name} removed")

    async def set_maintenance(self, ref: str, on: bool) -> list[str]:
        """Set or clear maintenance; returns the VMs still running on the host."""
        host = self.ctx.host(ref)
        if host.maintenance != on:
            host.maintenance = on
            await self.ctx.save_host(host)
            await self.ctx.record("info", "host_maintenance" if on else "host_activated",
                                  f"host {host.name} {'in maintenance' if on else 'activated'}",
                                  host_id=host.id)
        return sorted(vm.name for vm in self.ctx.vms.values()
                      if vm.host_id == host.id and vm.status != VM_DOWN)

    async def set_fence_agent(self, ref: str, argv: list[str]) -> Host:
        """Set the argv of the host's fence agent (``[]``: none); see :mod:`fencing`."""
        host = self.ctx.host(ref)
        host.fence_agent = check_agent(argv)
        await self.ctx.save_host(host)
        text = " ".join(argv) if argv else "none"
        await self.ctx.record("info", "host_fence_agent", f"host {host.name} fence agent: "
                              f"{text}", host_id=host.id)
        if host.status == HostStatus.NON_RESPONSIVE:
            self.fencer.host_unresponsive(host.id)
        return host

    async def wait_host_status(self, ref: str, status: HostStatus, timeout: float) -> Host:
        host = self.ctx.host(ref)
        await self.ctx.wait_until(lambda: host.effective_status == status, timeout)
        return host

    # -- certificates -------------------------------------------------------------------

    async def renew_host_cert(self, ref: str) -> Host:
        """New certificate for the host's own key; the old one stays accepted until the
        host presents the new one."""
        host = self.ctx.host(ref)
        agent = self._agent(host)
        csr = await agent.make_csr()
        signed = self.ca.sign_host(csr, self.config.host_cert_days)
        await agent.install(signed.cert_pem, signed.cacert_pem)
        host.prev_cert_serial, host.cert_serial = host.cert_serial, signed.serial
        host.cert_not_after = signed.not_after
        await self.ctx.save_host(host)
        await (self._appliers.get(host.id) or agent.apply)()
        await self.ctx.record("info", "host_cert_renewed", f"host {host.name} certificate "
                              f"renewed (serial {signed.serial}, until {signed.not_after})",
                              host_id=host.id)
        return host

    async def _renew_loop(self) -> None:
        while True:
            for host in list(self.ctx.hosts.values()):
                if host.status == HostStatus.UP and needs_renewal(
                        host.cert_not_after, self.config.renew_before_days):
                    try:
                        await self.renew_host_cert(host.id)
                    except EngineError as exc:
                        await self.ctx.record("error", "host_cert_renewal_failed",
                                              f"host {host.name}: {exc.message}",
                                              host_id=host.id)
            await asyncio.sleep(self.config.renew_check_interval)

    def _agent(self, host: Host) -> LocalHostAgent:
        return LocalHostAgent(host.agent, tool=self.config.vdsm_tool, env=self._agent_env)

    # -- monitoring ---------------------------------------------------------------------

    def _start_monitor(self, host: Host) -> None:
        monitor = HostMonitor(host.id, host.name, host.address, host.port,
                              ssl_context=self._ssl, expected_serials=lambda: _serials(host),
                              sink=self, settings=self.config)
        self.ctx.monitors[host.id] = monitor
        monitor.start()

    async def _transition(self, host_id: str, trigger: Trigger, reason: str = "") -> bool:
        host = self.ctx.hosts.get(host_id)
        if host is None:
            return False
        new = next_status(host.status, trigger)
        if new is None:
            if reason and reason != host.status_reason:
                host.status_reason = reason
                await self.ctx.save_host(host)
            return False
        old, host.status, host.status_reason = host.status, new, reason
        await self.ctx.save_host(host)
        severity = {HostStatus.CONNECTING: "warning", HostStatus.NON_RESPONSIVE: "error"}
        text = f"host {host.name}: {old} -> {new}" + (f" ({reason})" if reason else "")
        await self.ctx.record(severity.get(new, "info"), "host_status", text, host_id=host_id)
        return True

    async def host_connected(self, host_id: str) -> None:
        await self._transition(host_id, Trigger.CONNECTED)

    async def host_initialized(self, host_id: str, caps: dict[str, Any]) -> None:
        host = self.ctx.hosts.get(host_id)
        if host is None:
            return
        try:
            host.mem_mib = int(caps["memSize"])
        except (TypeError, ValueError):
            raise ValueError(f"memSize {caps.get('memSize')!r} is not a number") from None
        networks = caps.get("networks")
        host.networks = sorted(networks) if isinstance(networks, dict) else []
        host.prev_cert_serial = ""  # it presents the current certificate now
        await self._transition(host_id, Trigger.INITIALIZED)
        self.vms.host_ready(host_id)

    async def host_lost(self, host_id: str, reason: str) -> None:
        await self._transition(host_id, Trigger.LOST, reason)

    async def host_grace_expired(self, host_id: str) -> None:
        host = self.ctx.hosts.get(host_id)
        if host is None:
            return
        if await self._transition(host_id, Trigger.GRACE_EXPIRED, host.status_reason):
            await self.vms.host_unresponsive(host_id)
        if host.status == HostStatus.NON_RESPONSIVE:  # also when it was so before a restart
            self.fencer.host_unresponsive(host_id)

    async def host_stats(self, host_id: str, stats: dict[str, Any]) -> None:
        host = self.ctx.hosts.get(host_id)
        if host is not None:
            host.stats, host.last_seen = stats, time.time()
            await self.ctx.save_host(host)

    async def host_storage(self, host_id: str, domains: list[str]) -> None:
        host = self.ctx.hosts.get(host_id)
        if host is not None and host.storage_domains != domains:
            host.storage_domains = domains
            await self.ctx.save_host(host)

    async def vm_stats(self, host_id: str, stats: list[dict[str, Any]],
                       sent_at: float) -> None:
        if host_id in self.ctx.hosts:
            await self.vms.host_report(host_id, stats, sent_at)

    async def vm_event(self, host_id: str, vm_id: str, status: dict[str, Any]) -> None:
        if host_id in self.ctx.hosts:
            await self.vms.vm_event(host_id, vm_id, status)

    # -- events -------------------------------------------------------------------------

    async def events(self, limit: int = 100, after_id: int = 0) -> list[Event]:
        return await self.ctx.store.run(self.ctx.store.repo.list_events, limit, after_id)


def _serials(host: Host) -> set[str]:
    """The certificate serials the host may present: the issued one, and the previous one
    until the host reloaded after a renewal."""
    return {s for s in (host.cert_serial, host.prev_cert_serial) if s}
