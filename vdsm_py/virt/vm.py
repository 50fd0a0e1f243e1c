"""One VM: its status machine and the state the daemon keeps about it between calls.

Owns the statuses as VDSM reports them — WaitForLaunch → Powering up → Up; Paused;
Powering down / RebootInProgress; Down with exit code, message and reason — and the rules
that move between them, whatever the source of the news (our own operation, a libvirt
lifecycle event, the guest agent, a timer). Every change bumps ``statusTime``, drops the
cached stats and calls ``on_change`` (which publishes the ``VM_status`` event). Down is
final: a Down VM stays listed until ``VM.destroy``.

Also holds the per-VM asyncio lock that serializes operations on this VM (different VMs
proceed in parallel) and the flags operations use to cooperate (a destroy asked during a
create, a power-down chain in flight). Runs on the asyncio loop only; no libvirt calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

import libvirt
from lxml import etree

from vdsm_py.errors import VdsmError
from vdsm_py.virt import domparse
from vdsm_py.virt.domparse import DomainInfo
from vdsm_py.virt.metadata import VmMetadata
from vdsm_py.virt.status import ExitCode, ExitInfo, ExitReason, VmStatus

log = logging.getLogger("vdsm_py.virt")

_EV = libvirt


def now_ms() -> int:
    """VDSM's ``statusTime``: monotonic milliseconds (the event bus uses the same clock)."""
    return int(time.monotonic() * 1000)


class Vm:
    def __init__(
        self,
        vm_id: str,
        name: str,
        *,
        meta: VmMetadata,
        on_change: Callable[[Vm], None],
        powering_up_timeout: float = 60.0,
        status: VmStatus = VmStatus.WAIT_FOR_LAUNCH,
        info: DomainInfo | None = None,
        external: bool = False,
        start_time: float | None = None,
    ) -> None:
        self.id = vm_id
        self.name = name
        self.meta = meta
        self._info = info
        self.definition: etree._Element | None = None  # our XML, until libvirt's is read
        self.external = external
        self.status = status
        self.status_time = now_ms()
        self.exit: ExitInfo | None = None
        self.start_time = start_time if start_time is not None else time.time()
        self.lock = asyncio.Lock()
        # cooperation between operations
        self.starting = False
        self.stopped_while_starting: int | None = None
        self.start_error: VdsmError | None = None  # why the start failed
        self.create_waiting = False  # VM.create still waiting for an early libvirt refusal
        self.destroy_requested = False
        self.shutdown_reason: ExitReason | None = None
        self.powerdown_task: asyncio.Task[None] | None = None
        self.down_event = asyncio.Event()
        self.reboot_event = asyncio.Event()
        self.removal_waiters: dict[str, asyncio.Future[None]] = {}
        # what the stats report
        self.was_up = status == VmStatus.UP
        self.pause_code: str | None = None
        self.agent_connected = bool(info and info.agent_connected)
        self.guest: dict[str, Any] = {}
        self.sample: dict[str, Any] = {}
        self.xml_stale = True
        self.xml_generation = 0  # bumped whenever the domain XML may have changed
        self.xml_hash = ""
        self.ticket_disconnect_action = "LOCK_SCREEN"
        # the console client (libvirt graphics events) and the pending disconnect action
        self.client_ip = ""
        self.client_port = ""
        self.console_timer: asyncio.TimerHandle | None = None
        self.console_action_task: asyncio.Task[None] | None = None
        self.stats_cache: bytes | None = None
        # the sampler's (key, disk storage IDs by name), see stats._storage_ids
        self.storage_ids_cache: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None
        self._on_change = on_change
        self._change = asyncio.Event()  # pulsed (set, then replaced) on every change
        self._up_delay = powering_up_timeout
        self._up_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Vm {self.id} {self.name!r} {self.status}>"

    # -- reading ---------------------------------------------------------------------------

    @property
    def info(self) -> DomainInfo | None:
        """What the domain is: libvirt's XML once read, else what we asked libvirt for."""
        if self._info is None and self.definition is not None:
            self._info = domparse.from_tree(self.definition)
            self.definition = None
        return self._info

    @info.setter
    def info(self, value: DomainInfo | None) -> None:
        self._info = value
        self.definition = None

    @property
    def known_info(self) -> DomainInfo | None:
        """:attr:`info` without building it from our definition."""
        return self._info

    @property
    def described(self) -> bool:
        """Whether libvirt's own description was read (not just our definition)."""
        return self._info is not None and self.definition is None and not self.xml_stale

    @property
    def custom(self) -> dict[str, str]:
        return self.meta.custom

    @property
    def launch_paused(self) -> bool:
        return self.meta.get_bool("launchPaused")

    @property
    def is_down(self) -> bool:
        return self.status == VmStatus.DOWN

    @property
    def has_domain(self) -> bool:
        """Whether a libvirt domain may exist for this VM."""
        return self.status != VmStatus.DOWN

    def status_dict(self) -> dict[str, Any]:
        """VDSM's short status (``Host.getVMList``, ``VM.create``)."""
        out: dict[str, Any] = {
            "vmId": self.id,
            "status": str(self.status),
            "statusTime": str(self.status_time),
        }
        if self.exit is not None:
            out.update(self.exit.wire())
        return out

    def event_params(self) -> dict[str, Any]:
        """The body of a ``|virt|VM_status|<vmId>`` event for this VM."""
        out = self.status_dict()
        if self.pause_code and self.status == VmStatus.PAUSED:
            out["pauseCode"] = self.pause_code
        return out

    # -- changing --------------------------------------------------------------------------

    def mark_stale(self) -> None:
        """The domain XML changed: the next stats pass reads it again."""
        self.xml_stale = True
        self.xml_generation += 1

    def set_info(self, info: DomainInfo, live_xml: str) -> None:
        """What libvirt says the running domain is (after a start, a device change...)."""
        self.info = info
        self.xml_hash = str(zlib.crc32(live_xml.encode("utf-8")))
        self.xml_stale = False
        self.stats_cache = None
        self.storage_ids_cache = None  # devices may have changed with it

    def changed(self) -> None:
        """Something reported changed: drop cached stats and tell the listener."""
        self.stats_cache = None
        pulse, self._change = self._change, asyncio.Event()
        pulse.set()
        self._on_change(self)

    async def wait_status(self, statuses: set[VmStatus], timeout: float) -> bool:
        """Wait until the status is one of ``statuses``; False if ``timeout`` passed first.

        Operations wait for libvirt's event rather than setting the status themselves, so
        that an older event still on its way cannot flip the status back afterwards.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.status not in statuses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._change.wait(), remaining)
            except TimeoutError:
                return self.status in statuses
        return True

    def set_status(self, status: VmStatus, exit: ExitInfo | None = None) -> None:
        if self.status == VmStatus.DOWN:
            return  # final
        if self.status == status:
            return
        log.info("vmId=%s status %s -> %s%s", self.id, self.status, status,
                 f" ({exit.message})" if exit else "")
        self.status = status
        self.status_time = max(now_ms(), self.status_time + 1)
        if status == VmStatus.UP:
            self.was_up = True
        if status != VmStatus.POWERING_UP:
            self._cancel_up_timer()
        if status == VmStatus.DOWN:
            self.cancel_console_timer()
            self.client_ip = self.client_port = ""
            self.exit = exit or ExitInfo.of(ExitCode.ERROR, ExitReason.GENERIC_ERROR)
            self.sample = {}
            self.down_event.set()
            for waiter in self.removal_waiters.values():
                if not waiter.done():
                    waiter.set_result(None)
        self.changed()

    def set_down(self, code: ExitCode, reason: ExitReason, message: str = "") -> None:
        self.set_status(VmStatus.DOWN, ExitInfo.of(code, reason, message))

    def _cancel_up_timer(self) -> None:
        if self._up_timer is not None:
            self._up_timer.cancel()
            self._up_timer = None

    def _powering_up(self) -> None:
        """Powering up until the guest agent says so or the timeout passes."""
        if self.agent_connected or self._up_delay <= 0:
            self.set_status(VmStatus.UP)
            return
        self.set_status(VmStatus.POWERING_UP)
        self._cancel_up_timer()
        self._up_timer = asyncio.get_running_loop().call_later(self._up_delay, self._up_now)

    def _up_now(self) -> None:
        self._up_timer = None
        if self.status == VmStatus.POWERING_UP:
            self.set_status(VmStatus.UP)

    def started(self, paused: bool) -> None:
        """The domain runs (or was started paused): leave WaitForLaunch."""
        if self.status != VmStatus.WAIT_FOR_LAUNCH:
            return
        if paused:
            self.set_status(VmStatus.PAUSED)
        else:
            self._powering_up()

    def resumed(self) -> None:
        self.pause_code = None
        if self.status in (VmStatus.PAUSED, VmStatus.WAIT_FOR_LAUNCH):
            if self.was_up:
                self.set_status(VmStatus.UP)
            else:
                self._powering_up()

    def paused(self, pause_code: str | None = None) -> None:
        if self.status in (VmStatus.DOWN,):
            return
        if pause_code:
            self.pause_code = pause_code
        self.set_status(VmStatus.PAUSED)

    def rebooted(self) -> None:
        self.reboot_event.set()
        if self.status == VmStatus.REBOOT_IN_PROGRESS:
            self._powering_up()

    def agent_changed(self, connected: bool) -> None:
        self.agent_connected = connected
        if connected and self.status == VmStatus.POWERING_UP:
            self.set_status(VmStatus.UP)

    def cancel_console_timer(self) -> None:
        if self.console_timer is not None:
            self.console_timer.cancel()
            self.console_timer = None

    def cancel_timers(self) -> None:
        self._cancel_up_timer()
        self.cancel_console_timer()
        if self.powerdown_task is not None:
            self.powerdown_task.cancel()

    # -- libvirt lifecycle events -------------------------------------------------------

    def on_lifecycle(self, event: int, detail: int) -> None:
        if event == _EV.VIR_DOMAIN_EVENT_STARTED:
            self.started(paused=self.launch_paused)
        elif event == _EV.VIR_DOMAIN_EVENT_SUSPENDED:
            if detail in (_EV.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,):
                self.paused("EOTHER")
            else:
                self.paused()
        elif event == _EV.VIR_DOMAIN_EVENT_RESUMED:
            self.resumed()
        elif event == _EV.VIR_DOMAIN_EVENT_SHUTDOWN:
            if self.shutdown_reason is None:
                host = detail == getattr(_EV, "VIR_DOMAIN_EVENT_SHUTDOWN_HOST", -1)
                self.shutdown_reason = (ExitReason.HOST_SHUTDOWN if host
                                        else ExitReason.USER_SHUTDOWN)
        elif event == _EV.VIR_DOMAIN_EVENT_STOPPED:
            if self.starting:
                self.stopped_while_starting = detail  # the start decides what it means
                return
            self.set_status(VmStatus.DOWN, self._exit_for_stop(detail))

    def _exit_for_stop(self, detail: int) -> ExitInfo:
        reason = self.shutdown_reason
        if detail == _EV.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
            return ExitInfo.of(ExitCode.NORMAL, reason or ExitReason.USER_SHUTDOWN)
        if detail == _EV.VIR_DOMAIN_EVENT_STOPPED_SAVED:
            return ExitInfo.of(ExitCode.NORMAL, ExitReason.SAVE_STATE_SUCCEEDED)
        if detail == _EV.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
            return ExitInfo.of(ExitCode.NORMAL, ExitReason.MIGRATION_SUCCEEDED)
        if detail == _EV.VIR_DOMAIN_EVENT_STOPPED_DESTROYED and reason is not None:
            return ExitInfo.of(ExitCode.NORMAL, reason)
        return ExitInfo.of(ExitCode.ERROR, ExitReason.LOST_QEMU_CONNECTION)
