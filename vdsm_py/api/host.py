"""The ``Host`` verbs about the host itself: ping2, confirmConnectivity, getCapabilities,
getStats, getHardwareInfo.

Thin by design: each verb asks a domain object of ``vdsm_py.host`` and returns its answer,
already in VDSM's wire shape. Coroutine verbs run on the loop and must stay cheap (ping2,
getStats answers from the sampler's memory); plain methods run on the worker pool under the
dispatcher's timeout (capabilities and DMI read files and run ``dpkg-query`` the first time).
Must not touch libvirt, files or processes itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vdsm_py.config import Config
from vdsm_py.host.caps import CpuFlagsProvider, HooksProvider, HostCapabilities
from vdsm_py.host.hardware import HardwareInfo
from vdsm_py.host.stats import HostStatsSampler

if TYPE_CHECKING:
    from vdsm_py.hooks import HookRunner

log = logging.getLogger("vdsm_py.api")

StatsContributor = Callable[[], dict[str, Any]]
CapsContributor = Callable[[], dict[str, Any]]


class HostApi:
    """Implements the host's own ``Host`` verbs for :class:`~vdsm_py.rpc.dispatch.Dispatcher`.

    ``stats_contributors`` let other domains add their keys to ``getStats`` (virt: vmCount,
    vmActive...; storage: storageDomains) without this class knowing them; each must be
    cheap and non-blocking, as getStats runs on the loop.
    """

    def __init__(
        self,
        capabilities: HostCapabilities,
        sampler: HostStatsSampler,
        hardware: HardwareInfo,
        *,
        hooks: HookRunner | None = None,
        stats_contributors: tuple[StatsContributor, ...] = (),
    ) -> None:
        self.capabilities = capabilities
        self.sampler = sampler
        self.hardware = hardware
        self.hooks = hooks
        self.stats_contributors = list(stats_contributors)
        self.caps_contributors: list[CapsContributor] = []

    @classmethod
    def build(
        cls,
        config: Config,
        sampler: HostStatsSampler,
        *,
        hooks: HookRunner | None = None,
        extra_cpu_flags: CpuFlagsProvider | None = None,
    ) -> HostApi:
        """The production wiring from the daemon's configuration.

        With ``hooks``, capabilities list the installed hook scripts and the
        ``before_get_caps``/``after_get_caps``/``after_get_stats`` points run.
        """
        listing: HooksProvider | None = hooks.describe if hooks is not None else None
        caps = HostCapabilities(
            state_dir=config.daemon.state_dir,
            configured_uuid=config.host.uuid,
            hooks=listing,
            extra_cpu_flags=extra_cpu_flags,
        )
        return cls(caps, sampler, HardwareInfo(), hooks=hooks)

    def warm_up(self) -> None:
        """Compute the cached facts now (blocking: run on the worker pool at start-up)."""
        self.capabilities.static()
        self.hardware.report()

    def add_stats_contributor(self, contributor: StatsContributor) -> None:
        self.stats_contributors.append(contributor)

    def add_caps_contributor(self, contributor: CapsContributor) -> None:
        """Let another domain add capability keys (network: networks, nics, bondings...).

        Contributors may block (they read the kernel's state); they run on the worker pool.
        """
        self.caps_contributors.append(contributor)

    def _full_capabilities(self) -> dict[str, Any]:
        caps = self.capabilities.report()
        for contributor in self.caps_contributors:
            caps.update(contributor())
        return caps

    # -- verbs --------------------------------------------------------------------------

    async def ping2(self) -> bool:
        return True

    async def confirm_connectivity(self) -> bool:
        # The dispatcher records every call as activity; this verb only has to answer.
        return True

    async def get_capabilities(self) -> dict[str, Any]:
        hooks = self.hooks
        if hooks is not None and hooks.has_scripts("before_get_caps"):
            await hooks.run_json("before_get_caps", {})  # VDSM hands it an empty document
        # report() lists hook scripts (file reads): keep it off the loop.
        caps = await self.sampler.executor.run(
            self._full_capabilities, name="Host.getCapabilities"
        )
        if hooks is not None and hooks.has_scripts("after_get_caps"):
            caps = await hooks.run_json("after_get_caps", caps)
        return caps

    async def get_stats(self) -> dict[str, Any]:
        stats = self.sampler.report()
        for contributor in self.stats_contributors:
            stats.update(contributor())
        if self.hooks is not None and self.hooks.has_scripts("after_get_stats"):
            stats = await self.hooks.run_json("after_get_stats", stats)
        return stats

    def get_hardware_info(self) -> dict[str, str]:
        return self.hardware.report()
