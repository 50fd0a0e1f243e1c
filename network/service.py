"""The network subsystem as the daemon sees it: one object to build, start, stop and call.

Owns the asyncio side of setupNetworks: one change at a time (a second concurrent call is
refused with VDSM's busy code 40, never interleaved), the blocking work on the worker pool,
the connectivity check after a change (rolled back when the client is not heard from in
time), the ``|net|host_conn|no_id`` event after a change, persisting on
``setSafeNetworkConfig``, restoring at start-up, and the capabilities report. The daemon's
composition root wires it with :meth:`NetworkService.build` and feeds
:meth:`on_activity` from the dispatcher. Must not import the transport or the RPC layer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from network.caps import network_capabilities
from network.connectivity import ConnectivityWatch, Requester
from network.model import parse_request
from network.persistence import ConfigStore
from network.setup import NetworkSetup
from network.validate import NicFilter
from vdsm_py.config import Config
from vdsm_py.errors import NetworkLostConnection, ResourceUnavailable
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor

log = logging.getLogger("vdsm_py.network")

NET_EVENT = "|net|host_conn|no_id"


class NetworkService:
    def __init__(
        self,
        setup: NetworkSetup,
        executor: Executor,
        events: EventBus | None = None,
        *,
        apply_timeout: float = 120.0,
        restore_on_start: bool = True,
    ) -> None:
        self.setup = setup
        self.executor = executor
        self.events = events
        self.apply_timeout = apply_timeout
        self.restore_on_start = restore_on_start
        self.watch = ConnectivityWatch()
        self._busy = asyncio.Lock()

    @classmethod
    def build(cls, config: Config, executor: Executor, events: EventBus | None) -> NetworkService:
        net = config.network
        setup = NetworkSetup(
            net.netns,
            ConfigStore(config.daemon.state_dir),
            NicFilter(p.strip() for p in net.fake_nics.split(",")),
        )
        return cls(setup, executor, events, apply_timeout=net.apply_timeout,
                   restore_on_start=net.restore_on_start)

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

    async def stop(self) -> None:
        await self.executor.run(self.setup.close, name="close netlink")

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
            request = parse_request(networks, bondings, options)
            applied = await self.executor.run(
                self.setup.apply, request, timeout=self.apply_timeout, name="setupNetworks"
            )
            await self.executor.run(self.setup.commit, applied, name="save running networks")
            opts = request.options
            if opts.connectivity_check:
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
        if self.events is not None:
            self.events.publish(NET_EVENT, {})

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
        """The network keys of ``Host.getCapabilities`` (blocking: call on the worker pool)."""
        return network_capabilities(self.setup.nl, self.setup.store.running(),
                                    self.setup.nic_filter)
