"""What one network change knows of the kernel's links, so that it reads each link once.

Owns :class:`LinkView`: the links as dumped at the start of a change (the dump validation
used), kept true by the configurator reporting every change it makes. A link the view
does not know (never seen, or forgotten) is read from the kernel with one request and
then known. Every reported change forgets what the kernel may change *by itself* as a
consequence: the device's master (a bridge re-tunes its MTU to its ports', a bond its
slaves'), the devices stacked on it (its ports, its VLANs: a NIC going down closes its
VLANs, a lower MTU clamps theirs), and for deletions the device itself. The undo of each
step is built from what the view says the device was like at the start of the change,
which is what a rollback must restore. Must not change anything in the kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from network.netlink import Link, Netlink


class LinkView:
    def __init__(self, nl: Netlink, links: Mapping[str, Link] | None = None) -> None:
        self.nl = nl
        self._links: dict[str, Link | None] = dict(links or {})
        # Seeded from a full dump and nothing forgotten since: ports can be listed from it.
        self._complete = links is not None

    def get(self, name: str) -> Link | None:
        if name not in self._links:
            if self._complete:
                return None  # not in the dump, not made by this change
            self._links[name] = self.nl.link(name)
        link = self._links[name]
        return dataclasses.replace(link) if link is not None else None

    def exists(self, name: str) -> bool:
        return self.get(name) is not None

    def ports(self, name: str) -> list[Link]:
        if not self._complete:
            return self.nl.ports(name)
        return [dataclasses.replace(link) for link in self._links.values()
                if link is not None and link.master == name]

    # -- what the configurator reports ----------------------------------------------------

    def created(self, link: Link) -> None:
        """A device this change made, in the state it was made in."""
        self._links[link.name] = link

    def unknown(self, name: str) -> None:
        """A device this change made (or changed) in a state the view does not model: the
        next read asks the kernel."""
        self._links.pop(name, None)
        self._complete = False

    def changed(self, name: str, **fields: object) -> None:
        """``name`` now has ``fields`` (``up``, ``mtu`` or ``master``); what the kernel
        may have changed around it as a consequence is forgotten."""
        old = self._links.get(name)
        if old is None:
            self._forget(name)
            return
        self._links[name] = dataclasses.replace(old, **fields)  # type: ignore[arg-type]
        if "up" in fields or "mtu" in fields:
            # VLANs follow their parent down and are clamped to its MTU; a bond passes
            # its MTU to its slaves; a bridge re-tunes its MTU to its ports'.
            self._forget_stacked(name, ports=old.kind == "bond")
            if "mtu" in fields and old.master:
                self._forget(old.master)
        if "master" in fields:
            master = str(fields["master"])
            if old.master:
                released_by_bridge = self._kind(old.master) == "bridge"
                self._forget(old.master)  # a bridge re-tunes its MTU; a bond releases
                if not released_by_bridge:
                    self._forget(name)
            new = self._links.get(master) if master else None
            if master and (new is None or new.kind != "bridge" or new.mtu != old.mtu):
                # A bridge keeps its MTU when a port of the same MTU joins; a bond
                # changes its slave (MTU, address, flags).
                self._forget(master)
                self._forget(name)

    def deleted(self, names: list[str]) -> None:
        gone = set(names)
        for name in names:
            link = self._links.get(name)
            if link is not None and link.master and link.master not in gone:
                self._forget(link.master)
            if link is not None and link.kind == "bridge":
                for port in self._stacked(name, ports=True, vlans=False):
                    port.master = ""  # released as it was: same MTU, same flags
            self._forget_stacked(name, ports=link is None or link.kind != "bridge")
        for name in names:
            self._links[name] = None

    # -- forgetting -----------------------------------------------------------------------

    def _kind(self, name: str) -> str:
        link = self._links.get(name)
        return link.kind if link is not None else ""

    def _stacked(self, name: str, *, ports: bool, vlans: bool = True) -> list[Link]:
        return [lk for lk in self._links.values() if lk is not None and (
            (ports and lk.master == name) or (vlans and lk.vlan_parent == name))]

    def _forget(self, name: str) -> None:
        if self._links.pop(name, None) is not None:
            self._complete = False

    def _forget_stacked(self, name: str, *, ports: bool) -> None:
        for link in self._stacked(name, ports=ports):
            self._forget(link.name)
