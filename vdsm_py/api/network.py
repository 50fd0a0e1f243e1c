"""The ``Host`` verbs that change the host's networks: setupNetworks, setSafeNetworkConfig.

Thin by design: each verb hands its parameters to :class:`network.service.NetworkService`
and answers VDSM's shape (nothing but the status). The caller's connection is taken from the
call context so that the connectivity check waits for *that* client. Must not touch netlink
or files itself. (``Host.confirmConnectivity`` lives in ``vdsm_py.api.host``: any call
confirms.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from network.connectivity import Requester
from vdsm_py.rpc.dispatch import current_call

if TYPE_CHECKING:
    from network.service import NetworkService


class NetworkApi:
    def __init__(self, service: NetworkService) -> None:
        self.service = service

    async def setup_networks(
        self,
        networks: dict[str, Any],
        bondings: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        requester = Requester.from_context(current_call.get())
        await self.service.setup_networks(networks, bondings, options, requester)

    async def set_safe_network_config(self) -> None:
        await self.service.set_safe_network_config()
