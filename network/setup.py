"""The blocking core of setupNetworks and of restoring the persisted configuration.

Owns one change from request to kernel: read the host's links, validate the whole request
against them and the running configuration, plan, apply every step in one transaction and,
on a failed step, roll everything back and raise VDSM's error naming the item. Also owns
restore (make the kernel match the persisted configuration and drop unsaved changes),
shared by the daemon's start and ``vdsm-tool restore-nets``. Runs on a worker thread (or in
the tool's process); knows nothing of asyncio, clients or connectivity checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from network.configurator import Configurator, Plan, missing_bonds, missing_networks, plan
from network.dhcp import DhcpClients
from network.journal import Journal
from network.model import NetConfig, SetupRequest
from network.netlink import Link, Netlink
from network.ops import OpRunner
from network.persistence import ConfigStore
from network.transaction import StepFailed, Transaction
from network.validate import NicFilter, validate
from vdsm_py.errors import NetworkFailedIfup, NetworkUsedBridge

log = logging.getLogger("vdsm_py.network")


@dataclass
class Applied:
    """A change that is in the kernel but not yet final: it can still be rolled back."""

    before: NetConfig
    after: NetConfig
    tx: Transaction


def _failure(exc: StepFailed, rollback_failures: list[str]) -> Exception:
    cause = exc.cause
    why = cause.args[1] if isinstance(cause, NetlinkError) and len(cause.args) > 1 else cause
    message = f"{exc.item}: {exc.what} failed: {why}"
    if rollback_failures:
        message += "; ROLLBACK INCOMPLETE: " + "; ".join(rollback_failures)
    else:
        message += "; every change was rolled back"
    if isinstance(cause, NetlinkError) and cause.code == 17 and "create" in exc.what:
        return NetworkUsedBridge(message)
    return NetworkFailedIfup(message)


class NetworkSetup:
    """Applies validated changes to one network namespace and records them in the store."""

    def __init__(self, netns: str, store: ConfigStore, nic_filter: NicFilter) -> None:
        self.netns = netns
        self.store = store
        self.nic_filter = nic_filter
        self.dhcp = DhcpClients(netns, store.dir / "dhcp")
        self.journal = Journal(store.dir / "journal.jsonl")
        self._nl: Netlink | None = None

    @property
    def nl(self) -> Netlink:
        if self._nl is None:
            self._nl = Netlink(self.netns)
        return self._nl

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    def apply(self, request: SetupRequest) -> Applied:
        """Validate and apply; the running configuration is saved by :meth:`commit`."""
        running = self.store.running()
        links = self.nl.links()
        desired = validate(request, running, links, self.nic_filter)
        return self._apply(running, desired, plan(running, desired), links)

    def _apply(self, running: NetConfig, desired: NetConfig, the_plan: Plan,
               links: Mapping[str, Link] | None = None) -> Applied:
        """``links``: a dump of the kernel's links just taken (else links are read as
        needed)."""
        tx = Transaction(journal=self.journal)
        self.journal.begin()
        try:
            Configurator(self.nl, tx, OpRunner(self.nl, self.dhcp), links).apply(
                the_plan, desired)
        except StepFailed as exc:
            failures = tx.rollback()
            self.journal.clear()
            raise _failure(exc, failures) from exc
        log.info("network change applied in %d steps: networks %s, bonds %s", tx.done,
                 sorted(desired.networks), sorted(desired.bondings))
        return Applied(running, desired, tx)

    def commit(self, applied: Applied) -> None:
        self.store.save_running(applied.after)
        self.journal.clear()

    def rollback(self, applied: Applied) -> list[str]:
        failures = applied.tx.rollback()
        self.journal.clear()
        log.warning("network change rolled back%s",
                    f" INCOMPLETELY: {failures}" if failures else "")
        return failures

    def restore(self) -> NetConfig:
        """Make the kernel match the persisted configuration; forget unsaved changes.

        Networks and bonds of the running configuration that are not persisted are
        removed; persisted ones that differ or are missing from the kernel (after a boot)
        are rebuilt. Without a persisted configuration, nothing is persisted: everything
        the agent made is removed, as VDSM does.
        """
        self.recover()
        running = self.store.running()
        safe = self.store.safe()
        missing = missing_networks(self.nl, safe) | self._dead_dhcp(safe)
        the_plan = plan(
            running, safe,
            rebuild=missing & frozenset(running.networks),
            rebuild_bonds=missing_bonds(self.nl, safe) & frozenset(running.bondings),
        )
        if the_plan.empty:
            log.info("network configuration already matches the persisted one")
            self.store.save_running(safe)
            return safe
        applied = self._apply(running, safe, the_plan)
        self.commit(applied)
        log.info("persisted network configuration restored")
        return safe

    def _dead_dhcp(self, config: NetConfig) -> frozenset[str]:
        """DHCP networks whose client is not running (after a boot, or it died)."""
        return frozenset(
            name for name, net in config.networks.items()
            if (net.dhcpv4 and not self.dhcp.running(net.iface, 4))
            or (net.dhcpv6 and not self.dhcp.running(net.iface, 6))
        )

    def recover(self) -> int:
        """Undo the change a dead agent left half-done (from its journal), newest step
        first; the kernel is then back at the saved running configuration. Returns how many
        undos were replayed."""
        entries = self.journal.pending()
        if not entries:
            return 0
        log.warning("the agent stopped in the middle of a network change: undoing its %d "
                    "recorded steps", len(entries))
        runner = OpRunner(self.nl, self.dhcp)
        for entry in reversed(entries):
            try:
                runner.run_wire(entry.op)
            except Exception as exc:  # noqa: BLE001 - one failed undo must not stop the rest
                log.info("undo of %s: %s not needed or not possible: %s", entry.item,
                         entry.what, exc)
        self.journal.clear()
        return len(entries)
