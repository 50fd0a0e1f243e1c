"""The network subsystem as the daemon sees it: one object to build, start, stop and call.

Owns the asyncio side of setupNetworks: one change at a time (a second concurrent call is
refused with VDSM's busy code 40, never interleaved), the blocking work on the worker pool,
the ``before_network_setup``/``after_network_setup`` hooks around it (:mod:`network.hooks`),
the connectivity check after a change (rolled back when the client is not heard from in
time), the ``|net|host_conn|no_id`` event after a change and, debounced, after link
changes seen by :mod:`network.linkmonitor` (which also invalidate the cached capabilities), persisting on
``setSafeNetworkConfig``, restoring at start-up, and the capabilities report. The daemon's
composition root wires it with :meth:`NetworkService.build` and feeds
:meth:`on_activity` from the dispatcher. Must not import the transport or the RPC layer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pyroute2.config

from network.caps import network_capabilities
from network.connectivity import ConnectivityWatch, Requester
from network.hooks import NetworkHooks, WireRequest
from network.linkmonitor import Debouncer, LinkMonitor
from network.model import parse_request
from network.persistence import ConfigStore
from network.setup import NetworkSetup
from network.validate import NicFilter
from vdsm_py.config import Config
from vdsm_py.errors import NetworkLostConnection, ResourceUnavailable
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor
from vdsm_py.hooks import HookRunner

log = logging.getLogger("vdsm_py.network")

NET_EVENT = "|net|host_conn|no_id"

# pyroute2 opens a socket in another namespace from a forked child and stops that child
# with SIGTERM. The child inherits the daemon's asyncio signal handling (the handler and
# the loop's wake-up socket), so that SIGTERM would reach the daemon's loop as if the
# daemon itself had been told to stop. With this flag the child resets SIGTERM to its
# default action first.
pyroute2.config.disable_mp_signal = True


class CapsCache:
    """The network capabilities, computed once per change of the host's links, addresses
    or routes (the link monitor invalidates it); used only while the monitor runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._value: dict[str, Any] | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._value = None

    def get(self, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            generation, value = self._generation, self._value
        if value is None:
            value = compute()
            with self._lock:
                if self._generation == generation:  # nothing changed while computing
                    self._value = value
        return copy.deepcopy(value)


class NetworkService:
    def __init__(
        self,
        setup: NetworkSetup,
        executor: Executor,
        events: EventBus | None = None,
        *,
        apply_timeout: float = 120.0,
        restore_on_start: bool = True,
        hooks: HookRunner | None = None,
        link_events: bool = False,
        link_event_delay: float = 1.0,
    ) -> None:
        self.setup = setup
        self.executor = executor
        self.events = events
        self.apply_timeout = apply_timeout
        self.restore_on_start = restore_on_start
        self.watch = ConnectivityWatch()
        self.hooks = NetworkHooks(hooks)
        self._busy = asyncio.Lock()
        self.caps_cache = CapsCache()
        self.monitor = (LinkMonitor(setup.netns, self._on_link, self.caps_cache.invalidate)
                        if link_events else None)
        self._link_changes = Debouncer(link_event_delay, self._publish_link_changes,
                                       hold=self._busy.locked)

    @classmethod
    def build(
        cls, config: Config, executor: Executor, events: EventBus | None,
        hooks: HookRunner | None = None,
    ) -> NetworkService:
        net = config.network
        setup = NetworkSetup(
            net.netns,
            ConfigStore(config.daemon.state_dir),
            NicFilter(p.strip() for p in net.fake_nics.split(",")),
        )
        return cls(setup, executor, events, apply_timeout=net.apply_timeout,
                   restore_on_start=net.restore_on_start, hooks=hooks,
                   link_events=net.link_events, link_event_delay=net.link_event_delay)

    def api(self) -> Any:
        """The ``Host`` verbs object to register with the dispatcher."""
        from vdsm_py.api.network import NetworkApi

        return NetworkApi(self)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.restore_on_start:
            async with self._busy:
                await self.executor.run(self.setup.restore, timeout=self.apply_timeout,
                                        name="restore networks")
        if self.monitor is not None:
            self.monitor.start(asyncio.get_running_loop())
        self.caps_cache.invalidate()

    async def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        self._link_changes.cancel()
        await self.executor.run(self.setup.close, name="close netlink")

    def _on_link(self, name: str) -> None:
        self._link_changes.touch(name)

    def _publish_link_changes(self, names: set[str]) -> None:
        log.info("links changed: %s", ", ".join(sorted(names)))
        if self.events is not None:
            self.events.publish(NET_EVENT, {})

    def on_activity(self, ctx: Any) -> None:
        """Give this to ``Dispatcher.on_activity``: every call may confirm connectivity."""
        self.watch.on_activity(ctx)

    # -- verbs --------------------------------------------------------------------------

    async def setup_networks(
        self,
        networks: Mapping[str, Any],
        bondings: Mapping[str, Any],
        options: Mapping[str, Any],
        requester: Requester | None = None,
    ) -> None:
        if self._busy.locked():
            raise ResourceUnavailable("Another network change is in progress")
        async with self._busy:
            wire = WireRequest(networks, bondings, options)
            try:
                wire = await self.hooks.before(wire)
                await self._change(wire, requester)
            except Exception:
                await self.hooks.after(wire, failed=True)
                raise
            finally:
                self.caps_cache.invalidate()  # the running configuration may have changed
            await self.hooks.after(wire, failed=False)
        self._link_changes.clear()  # this event covers the links the change made
        if self.events is not None:
            self.events.publish(NET_EVENT, {})

    async def _change(self, wire: WireRequest, requester: Requester | None) -> None:
        """Validate, apply, save and (with the check) confirm or roll back one change."""
        request = parse_request(wire.networks, wire.bondings, wire.options)
        applied = await self.executor.run(
            self.setup.apply, request, timeout=self.apply_timeout, name="setupNetworks"
        )
        await self.executor.run(self.setup.commit, applied, name="save running networks")
        opts = request.options
        if not opts.connectivity_check:
            return
        try:
            seen = await self.watch.wait(requester, opts.connectivity_timeout)
        except asyncio.CancelledError:
            self._rollback_now(applied)  # daemon stopping: do not leave it half-confirmed
            raise
        if not seen:
            failures = await self.executor.run(
                self._rollback_now, applied, timeout=self.apply_timeout,
                name="setupNetworks rollback",
            )
            detail = f"; ROLLBACK INCOMPLETE: {failures}" if failures else ""
            raise NetworkLostConnection(
                f"connectivity check failed: no call from the client within "
                f"{opts.connectivity_timeout:g} s; the change was rolled back{detail}"
            )

    def _rollback_now(self, applied: Any) -> list[str]:
        failures = self.setup.rollback(applied)
        self.setup.store.save_running(applied.before)
        return failures

    async def set_safe_network_config(self) -> None:
        if self._busy.locked():
            raise ResourceUnavailable("A network change is in progress")
        async with self._busy:
            store = self.setup.store
            await self.executor.run(lambda: store.persist(store.running()),
                                    name="setSafeNetworkConfig")

    def capabilities(self) -> dict[str, Any]:
        """The network keys of ``Host.getCapabilities`` (blocking: call on the worker pool);
        cached between changes while the link monitor watches the kernel."""

        def compute() -> dict[str, Any]:
            return network_capabilities(self.setup.nl, self.setup.store.running(),
                                        self.setup.nic_filter)

        if self.monitor is None or not self.monitor.running:
            return compute()
        return self.caps_cache.get(compute)
