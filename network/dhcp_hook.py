"""The event script of the DHCP clients the agent runs (busybox ``udhcpc`` / ``udhcpc6``).

The client runs this (through a small executable wrapper written by
:class:`network.dhcp.DhcpClients`) inside the network namespace of the interface. udhcpc
gives the event as ``argv[1]`` (``deconfig``, ``bound``, ``renew``, ``leasefail``, ``nak``)
and the lease in the environment (``interface``, ``ip``, ``mask``/``subnet``, ``router``,
``lease``); ``dhclient -6`` gives ``reason`` (``BOUND6``, ``RENEW6``, ``EXPIRE6``...) and
``new_ip6_address``/``new_ip6_prefixlen``. It applies the lease through pyroute2 — the
address, and the default route when the network holds it (``VDSM_PY_DHCP_DEFAULT_ROUTE=1``)
— and records it as JSON in ``<dir of the wrapper>/<iface>.dhcp4.lease`` (or ``.dhcp6``)
so that the agent can report it and remove it when the client is stopped. Never runs
``ip`` or any other program; must not touch anything but the one interface and its lease.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

ERR_EXISTS = 17
ERR_NOT_FOUND = (3, 19, 99)  # ESRCH, ENODEV, EADDRNOTAVAIL


_DHCLIENT_EVENTS = {"BOUND6": "bound", "RENEW6": "renew", "REBIND6": "renew",
                    "REBOOT6": "bound", "EXPIRE6": "deconfig", "RELEASE6": "deconfig",
                    "STOP6": "deconfig"}


def lease_from_env(env: dict[str, str]) -> dict[str, Any]:
    """The lease as the agent keeps it: ``{"address": "a/len", "router": ..., "lease": s}``."""
    if env.get("new_ip6_address"):  # dhclient -6: a single address, the prefix from RAs
        plen6 = env.get("new_ip6_prefixlen") or "128"
        return {"address": f"{env['new_ip6_address']}/{plen6}", "router": "",
                "lease": env.get("new_max_life", "")}
    ip = env.get("ip", "")
    if not ip:
        return {}
    if env.get("mask"):
        plen = int(env["mask"])
    elif env.get("subnet"):
        plen = ipaddress.IPv4Network(f"0.0.0.0/{env['subnet']}").prefixlen
    else:
        plen = 32
    router = (env.get("router") or "").split()
    return {"address": f"{ip}/{plen}", "router": router[0] if router else "",
            "lease": env.get("lease", "")}


def _quiet(fn: Any, *ignored: int) -> None:
    try:
        fn()
    except NetlinkError as exc:
        if exc.code not in ignored:
            raise


def _route(ipr: IPRoute, command: str, router: str, index: int) -> None:
    ipr.route(command, dst="0.0.0.0/0", gateway=router, oif=index)


def unapply(ipr: IPRoute, index: int, old: dict[str, Any], default_route: bool) -> None:
    if default_route and old.get("router"):
        _quiet(lambda: _route(ipr, "del", old["router"], index), *ERR_NOT_FOUND)
    if old.get("address"):
        address, _, plen = old["address"].partition("/")
        _quiet(lambda: ipr.addr("del", index=index, address=address, prefixlen=int(plen)),
               *ERR_NOT_FOUND)


def apply(ipr: IPRoute, index: int, new: dict[str, Any], default_route: bool) -> None:
    address, _, plen = new["address"].partition("/")
    _quiet(lambda: ipr.addr("add", index=index, address=address, prefixlen=int(plen)),
           ERR_EXISTS)
    if default_route and new.get("router"):
        ipr.route("replace", dst="0.0.0.0/0", gateway=new["router"], oif=index)


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    env = dict(os.environ) if env is None else env
    if "reason" in env:  # dhclient (which gives its script a fresh environment)
        event, family = _DHCLIENT_EVENTS.get(env["reason"], ""), 6
    else:
        event, family = (argv[1] if len(argv) > 1 else ""), 4
    lease_path = Path(argv[0]).resolve().parent / f"{env['interface']}.dhcp{family}.lease"
    default_route = env.get("VDSM_PY_DHCP_DEFAULT_ROUTE") == "1"
    try:
        old = json.loads(lease_path.read_text())
    except (FileNotFoundError, ValueError):
        old = {}
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=env["interface"])
        if not found:
            return 1
        index = found[0]
        if event in ("deconfig", "leasefail", "nak"):
            unapply(ipr, index, old, default_route)
            lease_path.unlink(missing_ok=True)
        elif event in ("bound", "renew"):
            new = lease_from_env(env)
            if not new:
                return 1
            if old and old.get("address") != new["address"]:
                unapply(ipr, index, old, default_route)
            apply(ipr, index, new, default_route)
            tmp = lease_path.with_name(lease_path.name + ".tmp")
            tmp.write_text(json.dumps(new))
            os.replace(tmp, lease_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
