"""Network benchmark: ``Host.setupNetworks`` with 100 bridged networks in one call, and their
removal in one call, through a real ``vdsmd --dev`` over mutual TLS + STOMP + JSON-RPC.

The daemon manages a private network namespace (``[network] netns``) holding N veth pairs
whose ``veth_*`` ends play the NICs. Each network is bridged on its own NIC (this machine's
kernel has no 8021q module, so no VLANs: "else bridges on veth"); with ``--vlans`` the
networks are VLANs 1..N of one NIC instead, where the kernel can.

Baseline, measured in the same run on an identical namespace: the bare pyroute2 calls
that build the same kernel state (create the bridge with its MTU, enslave the NIC, set the
bridge up; then delete the bridges), one ``IPRoute`` socket, no validation, no undo log,
no persistence, no RPC. The ratios are daemon / baseline. Also measured: the kernel's floor
for removal, ``kernel_remove_grouped_s`` — the same bridges deleted bare in one link-group
request (what the agent does); deleting a bridge costs the kernel one RCU barrier
(``br_multicast_dev_del``), about 17 ms here, whatever the request. Rounds alternate so that
noise hits both alike; medians are reported. Targets: ``setup_100_s`` <= 2,
``remove_100_s`` <= 2.

    .venv/bin/python bench/network.py [--networks 100] [--rounds 3] [--vlans]

Needs root (network namespaces). The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyroute2 import IPRoute

from tests.integration.net_daemon import connected, start_net_daemon
from tests.integration.netns import TestHost, can_use_netns, kernel_state
from vdsm_py.client.aio import Client

NO_CHECK = {"connectivityCheck": False}


def nic(i: int) -> str:
    return f"veth_{i}"


def net_name(i: int) -> str:
    return f"bnet{i}"


def make_host(count: int, vlans: bool) -> TestHost:
    host = TestHost()
    for i in range(1 if vlans else count):
        host.add_nic(nic(i))
    return host


def request(count: int, vlans: bool) -> dict[str, dict]:
    if vlans:
        return {net_name(i): {"nic": nic(0), "vlan": i + 1} for i in range(count)}
    return {net_name(i): {"nic": nic(i)} for i in range(count)}


# -- baseline: the same kernel state with bare pyroute2 -------------------------------------


def raw_setup(ipr: IPRoute, count: int, vlans: bool) -> None:
    for i in range(count):
        port = nic(i)
        if vlans:
            port = f"{nic(0)}.{i + 1}"
            parent = ipr.link_lookup(ifname=nic(0))[0]
            ipr.link("add", ifname=port, kind="vlan", link=parent, vlan_id=i + 1, mtu=1500)
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0], state="up")
        ipr.link("add", ifname=net_name(i), kind="bridge", br_stp_state=0, mtu=1500)
        bridge = ipr.link_lookup(ifname=net_name(i))[0]
        ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=bridge)
        ipr.link("set", index=bridge, state="up")


def raw_remove(ipr: IPRoute, count: int, vlans: bool) -> None:
    for i in range(count):
        ipr.link("del", index=ipr.link_lookup(ifname=net_name(i))[0])
        if vlans:
            ipr.link("del", index=ipr.link_lookup(ifname=f"{nic(0)}.{i + 1}")[0])


def raw_remove_grouped(ipr: IPRoute, count: int, vlans: bool) -> None:
    """The kernel's floor for removal: every device in one link group, one delete."""
    for i in range(count):
        ipr.link("set", ifname=net_name(i), group=GROUP)
        if vlans:
            ipr.link("set", ifname=f"{nic(0)}.{i + 1}", group=GROUP)
    ipr.link("del", group=GROUP)


GROUP = 4242


def baseline_round(host: TestHost, count: int, vlans: bool) -> tuple[float, float, float]:
    ipr = IPRoute(netns=host.name)
    try:
        start = time.perf_counter()
        raw_setup(ipr, count, vlans)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        raw_remove(ipr, count, vlans)
        remove = time.perf_counter() - start
        raw_setup(ipr, count, vlans)
        start = time.perf_counter()
        raw_remove_grouped(ipr, count, vlans)
        grouped = time.perf_counter() - start
    finally:
        ipr.close()
    return setup, remove, grouped


# -- the daemon ------------------------------------------------------------------------------


async def daemon_round(client: Client, host: TestHost, count: int, vlans: bool
                       ) -> tuple[float, float]:
    nets = request(count, vlans)
    start = time.perf_counter()
    await client.call("Host.setupNetworks",
                      {"networks": nets, "bondings": {}, "options": NO_CHECK}, timeout=300)
    setup = time.perf_counter() - start
    links = (await asyncio.to_thread(kernel_state, host.name))["links"]
    missing = [n for n in nets if n not in links]
    if missing:
        raise SystemExit(f"setupNetworks left out {len(missing)} bridges: {missing[:5]}")
    removal = {n: {"remove": True} for n in nets}
    start = time.perf_counter()
    await client.call("Host.setupNetworks",
                      {"networks": removal, "bondings": {}, "options": NO_CHECK}, timeout=300)
    remove = time.perf_counter() - start
    links = (await asyncio.to_thread(kernel_state, host.name))["links"]
    left = [n for n in links if n.startswith("bnet") or "." in n]
    if left:
        raise SystemExit(f"removal left {len(left)} devices behind: {left[:5]}")
    return setup, remove


async def run(count: int, rounds: int, vlans: bool) -> dict[str, float]:
    # pyroute2's blocking API runs its own event loop: keep it off this one.
    daemon_host = await asyncio.to_thread(make_host, count, vlans)
    raw_host = await asyncio.to_thread(make_host, count, vlans)
    work = Path(tempfile.mkdtemp(prefix="bench-network-"))
    daemon = start_net_daemon(work / "host", daemon_host.name, log_level="WARNING")
    try:
        async with connected(daemon) as client:
            d_setup, d_remove, b_setup, b_remove, b_grouped = [], [], [], [], []
            for n in range(rounds):
                s, r = await daemon_round(client, daemon_host, count, vlans)
                d_setup.append(s)
                d_remove.append(r)
                bs, br, bg = await asyncio.to_thread(baseline_round, raw_host, count, vlans)
                b_setup.append(bs)
                b_remove.append(br)
                b_grouped.append(bg)
                print(f"round {n + 1}: daemon setup {s:.3f} s remove {r:.3f} s | "
                      f"pyroute2 setup {bs:.3f} s remove {br:.3f} s "
                      f"(one group delete {bg:.3f} s)", flush=True)
    finally:
        daemon.close()
        await asyncio.to_thread(daemon_host.close)
        await asyncio.to_thread(raw_host.close)
    setup, remove = statistics.median(d_setup), statistics.median(d_remove)
    base_setup, base_remove = statistics.median(b_setup), statistics.median(b_remove)
    return {
        "networks": count,
        "vlans": vlans,
        "rounds": rounds,
        "setup_100_s": round(setup, 3),
        "remove_100_s": round(remove, 3),
        "baseline_setup_s": round(base_setup, 3),
        "baseline_remove_s": round(base_remove, 3),
        "kernel_remove_grouped_s": round(statistics.median(b_grouped), 3),
        "setup_ratio": round(setup / base_setup, 2),
        "remove_ratio": round(remove / base_remove, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vlans", action="store_true",
                        help="VLANs 1..N of one NIC under the bridges (needs 8021q)")
    args = parser.parse_args()
    ok, why = can_use_netns()
    if not ok:
        raise SystemExit(why)
    figures = asyncio.run(run(args.networks, args.rounds, args.vlans))
    print(f"setupNetworks {args.networks} bridged networks: {figures['setup_100_s']:.3f} s "
          f"(pyroute2 alone {figures['baseline_setup_s']:.3f} s, x{figures['setup_ratio']}); "
          f"removal {figures['remove_100_s']:.3f} s "
          f"(pyroute2 alone {figures['baseline_remove_s']:.3f} s, x{figures['remove_ratio']}; "
          f"kernel floor, one group delete: {figures['kernel_remove_grouped_s']:.3f} s)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
