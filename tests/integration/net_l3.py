"""Reading back what the addressing tests assert on: everything ``netns.kernel_state`` has,
plus IPv6 addresses, every routing table, policy rules, link indexes and the IPv6
autoconfiguration switches — all over netlink (and /proc/sys/net inside the namespace).

Also the peer side of a test host for DHCP and router advertisements: a ``dnsmasq`` run in
a second namespace that holds the ``peer_*`` ends of the veth pairs, stopped by PID; and the
``host``/``setup`` fixtures of the network tests (import ``host_fixture`` and
``setup_fixture`` into a test module).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, netns

from network.netlink import AF_INET6, NETNS_RUN_DIR, Netlink
from network.persistence import ConfigStore
from network.setup import NetworkSetup
from network.validate import NicFilter
from tests.integration.netns import NICS, TestHost, host_with_nics, kernel_state


@pytest.fixture(name="host")
def host_fixture() -> Iterator[TestHost]:
    """A namespace with the NICs veth_a, veth_b, veth_c."""
    with host_with_nics(NICS) as h:
        yield h


@pytest.fixture(name="setup")
def setup_fixture(host: TestHost, tmp_path: Path) -> Iterator[NetworkSetup]:
    """The agent's network core managing ``host``; DHCP clients stopped at the end (a
    client left running would keep the deleted namespace alive)."""
    s = NetworkSetup(host.name, ConfigStore(tmp_path / "state"), NicFilter(["veth_*"]))
    s.dhcp.lease_timeout = 10.0
    try:
        yield s
    finally:
        s.dhcp.stop_all(s.nl)
        s.close()


def full_state(ns: str, *, with_indexes: bool = False) -> dict[str, Any]:
    """A comparable picture of the namespace's layers 2 and 3 (link-local IPv6 and
    kernel-made routes left out: the kernel makes them again by itself)."""
    state = kernel_state(ns)
    with Netlink(ns) as nl:
        links = nl.links()
        state["addresses6"] = {
            k: sorted(a for a in v if ":" in a and not a.startswith("fe80:"))
            for k, v in nl.addresses().items()
        }
        state["addresses6"] = {k: v for k, v in state["addresses6"].items() if v}
        rules = nl.rules()
        tables = {254} | {r.table for r in rules if r.table not in (253, 255)}
        state["routes_all"] = sorted(
            (r.table, r.dst, r.gateway, r.dev, r.prefsrc)
            for table in tables for r in nl.routes(table=table)
        )
        state["routes6"] = sorted((r.dst, r.gateway, r.dev)
                                  for r in nl.routes(family=AF_INET6) if r.gateway)
        state["rules"] = sorted(
            (r.priority, r.table, r.src, r.dst, r.iif) for r in rules
        )
        state["ipv6_conf"] = {
            name: tuple(sorted(nl.ipv6_conf(name, ("accept_ra", "autoconf")).items()))
            for name, link in links.items() if link.kind in ("bridge", "vlan")
            or name.startswith("veth_")
        }
        if with_indexes:
            state["indexes"] = {name: link.index for name, link in links.items()}
    return state


@dataclass
class Peer:
    """The other ends of a test host's NICs, in a namespace of their own."""

    name: str
    ipr: IPRoute

    def close(self) -> None:
        self.ipr.close()
        netns.remove(self.name)


@contextlib.contextmanager
def peer_of(host: TestHost, nics: tuple[str, ...]) -> Iterator[Peer]:
    """Move ``peer_<x>`` of each ``veth_<x>`` of ``host`` into a new namespace."""
    name = f"vdsmp-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    ipr = IPRoute(netns=name)
    peer = Peer(name, ipr)
    try:
        for nic in nics:
            dev = "peer_" + nic.split("_", 1)[-1]
            index = host.ipr().link_lookup(ifname=dev)[0]
            host.ipr().link("set", index=index, net_ns_fd=name)
            moved = ipr.link_lookup(ifname=dev)[0]
            ipr.link("set", index=moved, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield peer
    finally:
        peer.close()


def can_run(program: str) -> tuple[bool, str]:
    return (True, "") if shutil.which(program) else (False, f"{program} is not installed")


@contextlib.contextmanager
def dnsmasq(peer: Peer, workdir: Path, args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``dnsmasq`` in the peer namespace (no DNS, our own lease file), killed by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["nsenter", f"--net={NETNS_RUN_DIR / peer.name}", "--",
            "dnsmasq", "--keep-in-foreground", "--port=0", "--no-resolv", "--no-hosts",
            "--conf-file=/dev/null", f"--dhcp-leasefile={workdir / 'leases'}",
            f"--pid-file={workdir / 'pid'}", "--log-dhcp", "--no-ping", "--log-facility=-", *args]
    log = open(workdir / "dnsmasq.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError((workdir / "dnsmasq.log").read_text())
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
