"""The composition root: builds every component of the daemon, wires them, runs them.

This is the only module that knows all the parts. Each part gets what it needs passed in
(no global registry, no god object): the executor, the event bus, its own config section.
Start order: instance lock → PKI check → schema + dispatcher → domain components → listen →
recovery (VM verbs answer 99 meanwhile) → READY. Stop order is the reverse, and never
touches running VMs: a daemon restart must be invisible to guests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from network.service import NetworkService
from storage import vm_support
from storage.service import StorageService
from vdsm_py import __version__
from vdsm_py.api.host import HostApi
from vdsm_py.api.host_vms import HostVmsApi
from vdsm_py.api.lease import LeaseApi
from vdsm_py.api.storage import register_all as register_storage_verbs
from vdsm_py.api.vm import VmApi
from vdsm_py.config import Config
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor
from vdsm_py.hooks import HookRunner
from vdsm_py.host.stats import HostStatsSampler
from vdsm_py.pki.check import PkiError, check_identity
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.rpc.dispatch import Dispatcher
from vdsm_py.rpc.schema import Schema
from vdsm_py.service import sdnotify
from vdsm_py.service.collector import CollectorSchedule
from vdsm_py.service.instance_lock import AlreadyRunning, InstanceLock
from vdsm_py.transport.server import StompServer
from vdsm_py.transport.tls import ReloadableServerContext
from vdsm_py.virt import VmManager

log = logging.getLogger("vdsm_py.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message tells the admin exactly why."""


@dataclass
class Daemon:
    config: Config
    events: EventBus = field(default_factory=EventBus)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _cleanups: list[Callable[[], Any]] = field(default_factory=list)
    _recoveries: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    server: StompServer | None = None
    dispatcher: Dispatcher | None = None
    _tls: ReloadableServerContext | None = None  # None in insecure mode

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT or :meth:`request_stop`; clean up whatever started."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload_tls)
        try:
            await self._start()
            await self._stop.wait()
        finally:
            sdnotify.stopping()
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s, stopping", sig.name)
        self._stop.set()

    def _reload_tls(self) -> None:
        """SIGHUP: load renewed certificates (or a new trusted CA) without a restart."""
        if self._tls is None:
            log.info("received SIGHUP; no TLS to reload")
            return
        try:
            self._tls.reload()
        except PkiError as exc:
            log.error("received SIGHUP; keeping the current certificates: %s", exc)
            return
        log.info("received SIGHUP; certificates reloaded from %s", self._tls.paths.root)
        sdnotify.status(f"Serving on port {self.server.port if self.server else '?'}")

    async def _start(self) -> None:
        cfg = self.config
        lock = InstanceLock(cfg.lock_file)
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(f"cannot take the instance lock {lock.path}: {exc}") from exc
        self._cleanups.append(lock.release)
        cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True)

        ssl_context = self._ssl_context()
        self.events.bind(asyncio.get_running_loop())
        executor = Executor(cfg.rpc.workers, cfg.rpc.call_timeout)
        self._cleanups.append(executor.close)

        dispatcher = Dispatcher(Schema.load(), executor, call_timeout=cfg.rpc.call_timeout)
        self.dispatcher = dispatcher
        await self._build_domain(dispatcher, executor)
        dispatcher.check_complete()

        server = StompServer(dispatcher.handle, self.events, ssl_context=ssl_context, rpc=cfg.rpc)
        try:
            await server.start(cfg.addresses.host, cfg.addresses.port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {cfg.addresses.host} port {cfg.addresses.port}: "
                f"{exc.strerror or exc}"
            ) from exc
        self.server = server
        self._cleanups.append(server.close)
        log.info(
            "vdsm_py %s listening on %s port %d (%s)",
            __version__, cfg.addresses.host, server.port,
            "PLAINTEXT, INSECURE" if ssl_context is None else "mutual TLS",
        )
        await self._recover(dispatcher)
        collector = CollectorSchedule(cfg.daemon.gc_refreeze_interval)
        collector.start()  # what the daemon holds now lives as long as it does
        self._cleanups.append(collector.stop)
        interval = sdnotify.watchdog_interval()
        if interval:
            task = asyncio.create_task(sdnotify.watchdog_loop(interval), name="watchdog")
            self._cleanups.append(task.cancel)
        sdnotify.ready(f"Serving on port {server.port}")

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.pki.insecure:
            log.warning(
                "*** INSECURE MODE: TLS is OFF, any client on the network can control this "
                "host. Development only. ***"
            )
            return None
        paths = PkiPaths(cfg.pki.dir)
        try:
            check_identity(paths)
            self._tls = ReloadableServerContext(paths)
        except PkiError as exc:
            raise StartupError(f"PKI problem: {exc}") from exc
        return self._tls.listener

    async def _build_domain(self, dispatcher: Dispatcher, executor: Executor) -> None:
        """Create the domain components and register their API objects."""
        hooks = HookRunner.from_config(self.config)
        await hooks.run("before_vdsm_start")
        self._cleanups.append(lambda: hooks.run("after_vdsm_stop"))
        host_api = await self._build_host(dispatcher, executor, hooks)
        await self._build_network(dispatcher, executor, host_api, hooks)
        storage = await self._build_storage(dispatcher, executor)
        await self._build_virt(dispatcher, executor, hooks, host_api, storage)

    async def _build_host(
        self, dispatcher: Dispatcher, executor: Executor, hooks: HookRunner
    ) -> HostApi:
        sampler = HostStatsSampler(executor, interval=self.config.host.stats_interval)
        await sampler.start()
        self._cleanups.append(sampler.stop)
        host_api = HostApi.build(self.config, sampler, hooks=hooks)
        await executor.run(host_api.warm_up, name="host facts")  # caps/DMI once, at start
        dispatcher.register("Host", host_api)
        return host_api

    async def _build_network(
        self, dispatcher: Dispatcher, executor: Executor, host_api: HostApi, hooks: HookRunner
    ) -> None:
        net = NetworkService.build(self.config, executor, self.events, hooks)
        await net.start()  # restores the persisted ("safe") network configuration
        self._cleanups.append(net.stop)
        dispatcher.register("Host", net.api())
        dispatcher.on_activity(net.on_activity)  # any call may confirm connectivity
        host_api.add_caps_contributor(net.capabilities)

    async def _build_storage(self, dispatcher: Dispatcher, executor: Executor) -> StorageService:
        storage = StorageService.build(self.config, executor, self.events)
        vm_support.register(storage)  # VM leases as SPM task steps
        await storage.start()
        self._cleanups.append(storage.stop)
        register_storage_verbs(dispatcher, storage)
        dispatcher.register("Lease", LeaseApi(storage))
        return storage

    async def _build_virt(
        self, dispatcher: Dispatcher, executor: Executor, hooks: HookRunner, host_api: HostApi,
        storage: StorageService,
    ) -> None:
        # VM disks and leases reach storage only through this adapter (DriveStorage)
        drive_storage = vm_support.VmDriveStorage(storage)
        # stops watching the VM lease keepers, which hold on for the VMs that run on
        self._cleanups.append(drive_storage.stop)
        vms = VmManager.build(self.config.virt, executor, self.events, hooks,
                              storage=drive_storage)
        await vms.start()  # connects to libvirt; recovery adopts the running VMs later
        self._cleanups.append(vms.stop)  # stops watching; never touches the VMs
        dispatcher.register("VM", VmApi(vms))
        dispatcher.register("Host", HostVmsApi(vms))
        host_api.add_stats_contributor(vms.host_stats)
        self._recoveries.append(vms.recover)

    async def _recover(self, dispatcher: Dispatcher) -> None:
        """Adopt what runs on the host before answering verbs that depend on it."""
        dispatcher.recovering = True
        sdnotify.status("Recovering")
        try:
            for recover in self._recoveries:
                await recover()
        finally:
            dispatcher.recovering = False

    async def _shutdown(self) -> None:
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                result = cleanup()
                if asyncio.iscoroutine(result):
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait_for(result, 10)
            except Exception:
                log.exception("error while stopping (%r)", cleanup)
        log.info("vdsm_py stopped")
