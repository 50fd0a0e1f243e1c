"""VM benchmark: 1000 VMs on libvirt's test driver behind a real ``vdsmd --dev``.

The test driver lives inside the daemon's process, so "1000 running VMs" is a test-driver
state file (``test:///<file>``) holding 1000 running domains that carry our metadata, as a
host would after VM.create. Every daemon started on it finds them running, like a restart.

Figures (the last line printed is one JSON object):

- ``recovery_s``: from spawning the daemon to the first VM verb served (not 99) with the
  1000 VMs adopted — measured after a SIGKILL of the previous daemon;
- ``getallvmstats_p50_ms`` (and p99): closed-loop ``Host.getAllVmStats`` round trips over
  mutual TLS + STOMP, the client's orjson decoding of the ~1.5 MB answer included;
- ``sampling_ms``: one bulk sampling pass over the 1000 VMs (p50 of several), measured
  with the daemon's own sampler code in this process over an identical test-driver state;
- ``rss_mb``: the daemon's resident memory with the 1000 VMs, after the stats round trips;
- ``create_overhead_ratio``: N VM.create calls (``xml`` form) sent at once to the daemon,
  until every VM was announced running (VM_status event, watched by a separate process so
  that decoding events does not slow the sending client), divided by N raw
  ``createXML`` of equal XMLs in this process on an identical test-driver state; the two
  batches alternate ``--rounds`` times (the machine is shared: a burst of load hits one
  round, not one side) and the figure is the median of the rounds' ratios;
  ``create_latency_ratio`` is the same one VM at a time (VM.create sent → its running
  event, vs one raw createXML); ``create_daemon_cpu_ms`` / ``create_raw_cpu_ms``: CPU time
  per create of the whole daemon process during the concurrent batch vs of the raw loop
  (where the time goes: on the test driver a createXML is ~0.5 ms, so the daemon's own
  work per create — RPC, XML, events — weighs as much as libvirt's);
  ``create_vm_layer_ratio``: the concurrent batch again, but VmManager.create called in this
  process (no TLS, JSON-RPC or client), against raw createXML: what the VM layer alone adds;
- ``create_floor_ratio``: the concurrent batch, in the same rounds, against a second daemon
  whose VM.create is cut down to what every create must do (``bench/floor_vmcreate.py``:
  the request over RPC, one worker-pool createXML, the Powering up event), divided by raw
  createXML: the price of any create over RPC on this machine, the floor under
  ``create_overhead_ratio``; ``create_vs_floor_ratio`` (daemon / floor) is what the VM
  layer adds above that floor;
- ``status_event_ms``: p50 from sending VM.pause to receiving the Paused VM_status event
  (an upper bound of the libvirt event → VM_status delay).

    .venv/bin/python bench/vms.py [--vms 1000] [--calls 200] [--creates 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import libvirt
from lxml import etree

from tests.integration.daemon_proc import DaemonProcess, free_port, start_daemon
from vdsm_py import devhost
from vdsm_py.client.aio import Client
from vdsm_py.client.errors import RpcError
from vdsm_py.config import VirtConfig
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.transport.tls import client_context
from vdsm_py.virt import VmManager, domxml
from vdsm_py.virt.libvirtconn import ensure_event_loop
from vdsm_py.virt.spec import parse_vm_params

BUILD = VirtConfig()


def vm_xml(i: int, tag: str) -> tuple[str, str]:
    """A realistic small VM: 2 NICs, 2 disks, VNC, serial console; our metadata."""
    vm_id = str(uuid.uuid4())
    params = {
        "vmName": f"{tag}-{i:05d}", "memSize": 1024, "smp": 2, "emulatedMachine": "pc",
        "custom": {"owner": "bench"},
        "devices": [
            {"type": "interface", "macAddr": f"00:1a:4a:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:01",
             "network": "ovirtmgmt"},
            {"type": "interface", "macAddr": f"00:1a:4a:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:02",
             "network": "storage"},
            # a path disk (storage IDs would make the daemon prepare the image from a
            # storage domain, which a raw createXML cannot do): a custom property of the same
            # size keeps the metadata what it was
            {"type": "disk", "path": f"/rhev/images/{vm_id}/root.img",
             "custom": {"imageRef": str(uuid.uuid4())}, "format": "cow"},
            {"type": "disk", "path": f"/rhev/images/{vm_id}/data.img"},
            {"type": "graphics", "device": "vnc"},
            {"type": "console"},
        ],
    }
    defn = domxml.build(parse_vm_params(vm_id, params), BUILD)
    domxml.stamp_start(defn)
    return vm_id, defn.xml()


def write_state(path: Path, n: int) -> str:
    node = etree.Element("node")
    for i in range(n):
        node.append(etree.fromstring(vm_xml(i, "bench")[1].encode()))
    path.write_bytes(etree.tostring(node))
    return f"test://{path}"


def configure(root: Path, port: int, uri: str, stats_interval: int = 2) -> None:
    devhost.prepare(root, port)
    conf = root / devhost.CONF_NAME
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    if not parser.has_section("virt"):
        parser.add_section("virt")
    # stats every 2 s (not 15) so the stats round trips see rates soon after recovery; the
    # powering-up timeout keeps its default (60 s): with 1 s, the Up events of one create
    # round landed in the middle of the next, and they are no part of a VM.create
    for key, value in {"libvirt_uri": uri, "stats_interval": str(stats_interval),
                       "guest_agent_interval": "0"}.items():
        parser.set("virt", key, value)
    parser.set("daemon", "log_level", "WARNING")
    with open(conf, "w", encoding="utf-8") as f:
        parser.write(f)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def connect(daemon: DaemonProcess) -> Client:
    return await Client.connect("127.0.0.1", daemon.port, ssl_context=daemon.client_ssl_context())


async def wait_serving(daemon: DaemonProcess, started: float, n: int) -> float:
    """Seconds from ``started`` until a VM verb answers with the n VMs adopted."""
    client = None
    while True:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"vdsmd exited:\n{daemon.log()}")
        try:
            if client is None:
                client = await connect(daemon)
            listed = await client.call("Host.getVMList", {"onlyUUID": True}, timeout=10)
            if len(listed) >= n:
                took = time.monotonic() - started
                await client.close()
                return took
        except RpcError as exc:
            if exc.code != 99:
                raise
        except OSError:
            client = None
        await asyncio.sleep(0.01)


async def stats_round_trips(client: Client, calls: int) -> tuple[list[float], int]:
    for _ in range(5):  # warm-up
        await client.call("Host.getAllVmStats")
    times = []
    size = 0
    for _ in range(calls):
        t = time.perf_counter()
        stats = await client.call("Host.getAllVmStats")
        times.append((time.perf_counter() - t) * 1000)
        size = len(stats)
    return times, size


def _watch_starts(port: int, pki_dir: str, out: Connection) -> None:
    """Event watcher process: sends ``(vmId, perf_counter)`` when a VM is announced running.

    A process of its own so that decoding every status event does not steal CPU from the
    client that sends the VM.create calls (perf_counter is CLOCK_MONOTONIC, shared by all
    processes of the machine, so the times compare).
    """

    async def run() -> None:
        paths = PkiPaths(Path(pki_dir))
        client = await Client.connect("127.0.0.1", port, ssl_context=client_context(
            paths.cert, paths.key, paths.cacert))
        stream = await client.subscribe_events(confirm=True)
        out.send(None)  # subscribed
        seen: set[str] = set()
        async for method, params in stream:
            if not method.startswith("|virt|VM_status|"):
                continue
            for vm_id, body in params.items():
                if (vm_id not in seen and isinstance(body, dict)
                        and body.get("status") in ("Powering up", "Up")):
                    seen.add(vm_id)
                    out.send((vm_id, time.perf_counter()))

    asyncio.run(run())


class Starts:
    """When each VM was announced running (Powering up), seen by a separate process."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.started: dict[str, float] = {}
        self._wanted: set[str] = set()
        self._all = asyncio.Event()
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_watch_starts, daemon=True,
                                 args=(daemon.port, str(daemon.pki_dir), child))

    async def start(self) -> None:
        self._proc.start()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self._conn.poll, 60):
            raise RuntimeError("the event watcher process did not subscribe")
        self._conn.recv()
        loop.add_reader(self._conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while self._conn.poll():
            vm_id, when = self._conn.recv()
            self.started[vm_id] = when
        if self._wanted and self._wanted <= self.started.keys():
            self._all.set()

    def stop(self) -> None:
        """Stop watching (also after a start() that never ran or failed part-way)."""
        asyncio.get_running_loop().remove_reader(self._conn.fileno())
        if self._proc.pid is not None:
            self._proc.kill()
            self._proc.join()

    async def wait(self, vm_ids: list[str], timeout: float = 120) -> None:
        self._wanted = set(vm_ids)
        self._all.clear()
        if not self._wanted <= self.started.keys():
            await asyncio.wait_for(self._all.wait(), timeout)


async def creates(client: Client, starts: Starts, xmls: list[tuple[str, str]],
                  concurrent: bool) -> float:
    """Seconds from the first VM.create sent until every VM was announced running."""

    async def one(vm_id: str, xml: str) -> None:
        answer = await client.call("VM.create", {"vmID": vm_id, "vmParams": {"xml": xml}})
        assert answer["status"] == "WaitForLaunch", answer
        if not concurrent:
            await starts.wait([vm_id])

    t = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(one(vm_id, xml) for vm_id, xml in xmls))
    else:
        for vm_id, xml in xmls:
            await one(vm_id, xml)
    await starts.wait([vm_id for vm_id, _ in xmls])
    return max(starts.started[vm_id] for vm_id, _ in xmls) - t


class Round(NamedTuple):
    """One round of the create figure: the daemon's batch, the floor daemon's, then as
    many raw createXML."""

    daemon_s: float  # first VM.create sent -> last VM announced running
    daemon_cpu_s: float  # the daemon process's CPU meanwhile
    floor_s: float  # the same against the floor daemon (bench/floor_vmcreate.py)
    raw_s: float
    raw_cpu_s: float


def raw_creates(uri: str, xmls: list[tuple[str, str]]) -> tuple[float, float]:
    """Seconds of wall time and of this thread's CPU time for the createXML calls."""
    conn = libvirt.open(uri)
    try:
        t, cpu = time.perf_counter(), time.thread_time()
        for _, xml in xmls:
            conn.createXML(xml, 0)
        return time.perf_counter() - t, time.thread_time() - cpu
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def status_events(client: Client, vm_ids: list[str]) -> list[float]:
    stream = await client.subscribe_events(confirm=True)
    it = stream.__aiter__()
    out = []
    for vm_id in vm_ids:
        key = f"|virt|VM_status|{vm_id}"
        t = time.perf_counter()
        await client.call("VM.pause", {"vmID": vm_id})
        while True:
            method, params = await asyncio.wait_for(it.__anext__(), 10)
            if method == key and params[vm_id]["status"] == "Paused":
                out.append((time.perf_counter() - t) * 1000)
                break
        await client.call("VM.cont", {"vmID": vm_id})
    return out


async def in_process(uri: str, n: int, creates: int, passes: int = 6
                     ) -> tuple[list[float], float, float]:
    """The daemon's VM layer in this process, without transport or client: sampling pass
    times (ms), and the seconds for ``creates`` VmManager.create calls at once (each
    answered once libvirt started the domain) against as many raw createXML calls."""
    executor = Executor(8, 60, name="bench")
    manager = VmManager.build(VirtConfig(libvirt_uri=uri, stats_interval=3600,
                                         guest_agent_interval=0), executor,
                              EventBus(asyncio.get_running_loop()))
    await manager.start()
    await manager.recover()
    assert len(manager.vms) >= n
    samples = [await manager.sampler.sample_once() * 1000 for _ in range(passes)]
    batch = [vm_xml(i, "layer") for i in range(creates)]
    t = time.perf_counter()
    await asyncio.gather(*(manager.create(vm_id, {"xml": xml}) for vm_id, xml in batch))
    layer = time.perf_counter() - t
    raw, _ = await asyncio.to_thread(raw_creates, uri, [
        vm_xml(i, "layerraw") for i in range(creates)])
    await manager.stop()
    executor.close()
    return samples, layer, raw


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating daemon/raw create batches (median ratio)")
    args = ap.parse_args()
    ensure_event_loop()
    work = Path(tempfile.mkdtemp(prefix="bench-vms-"))
    uri = write_state(work / "node.xml", args.vms)
    root = work / "host"
    port = free_port()
    configure(root, port, uri)
    print(f"state: {args.vms} running domains in {work / 'node.xml'}", flush=True)

    first = start_daemon(root, port=port, wait=False)
    first.wait_ready(120)
    first.close(signal.SIGKILL)
    spawned = time.monotonic()
    daemon = start_daemon(root, port=port, wait=False)
    try:
        recovery = await wait_serving(daemon, spawned, args.vms)
        print(f"recovery_s {recovery:.2f}", flush=True)
        client = await connect(daemon)
        await asyncio.sleep(2.5)  # let the daemon take its first samples
        times, listed = await stats_round_trips(client, args.calls)
        print(f"getAllVmStats over {listed} VMs: p50 {statistics.median(times):.1f} ms "
              f"p99 {pct(times, 0.99):.1f} ms", flush=True)
        rss = rss_mb(daemon.pid)
        print(f"daemon rss {rss:.0f} MB", flush=True)

        starts = Starts(daemon)
        await starts.start()
        floor_root, floor_port = work / "floor", free_port()
        configure(floor_root, floor_port, uri, stats_interval=3600)
        floor = start_daemon(floor_root, port=floor_port, wait=False,
                             program=[str(REPO / "bench" / "floor_vmcreate.py")])
        floor_starts = Starts(floor)
        try:
            floor.wait_ready(120)
            floor_client = await connect(floor)
            await floor_starts.start()
            rounds: list[Round] = []
            for r in range(args.rounds):
                batch = [vm_xml(i, f"new{r}") for i in range(args.creates)]
                floor_batch = [vm_xml(i, f"floor{r}") for i in range(args.creates)]
                if r % 2:  # every other round the floor goes first: no side owns a slot
                    floor_took = await creates(floor_client, floor_starts, floor_batch,
                                                concurrent=True)
                cpu_before = cpu_seconds(daemon.pid)
                took = await creates(client, starts, batch, concurrent=True)
                took_cpu = cpu_seconds(daemon.pid) - cpu_before
                if not r % 2:
                    floor_took = await creates(floor_client, floor_starts, floor_batch,
                                                concurrent=True)
                rounds.append(Round(took, took_cpu, floor_took, *await asyncio.to_thread(
                    raw_creates, uri, [vm_xml(i, f"raw{r}") for i in range(args.creates)])))
            await floor_client.close()
        finally:
            floor_starts.stop()
            floor.close()
        ratios = [r.daemon_s / r.raw_s for r in rounds]
        daemon_concurrent, daemon_cpu, floor_concurrent, raw, raw_cpu = Round(
            *(statistics.median(column) for column in zip(*rounds)))
        floor_ratio = statistics.median(r.floor_s / r.raw_s for r in rounds)
        vs_floor = statistics.median(r.daemon_s / r.floor_s for r in rounds)
        single = [vm_xml(i, "one") for i in range(min(args.creates, 50))]
        daemon_serial = await creates(client, starts, single, concurrent=False)
        starts.stop()
        raw_serial, _ = await asyncio.to_thread(raw_creates, uri, [
            vm_xml(i, "rawone") for i in range(len(single))])
        ratio = statistics.median(ratios)
        latency_ratio = daemon_serial / raw_serial
        print(f"VM.create x{args.creates} at once, {args.rounds} rounds: ratios "
              f"{', '.join(f'{r:.2f}' for r in ratios)} (daemon ms "
              f"{', '.join(f'{r.daemon_s * 1000:.0f}' for r in rounds)}; raw ms "
              f"{', '.join(f'{r.raw_s * 1000:.0f}' for r in rounds)})", flush=True)
        print(f"VM.create x{args.creates} at once {daemon_concurrent * 1000:.0f} ms vs raw "
              f"createXML {raw * 1000:.0f} ms (medians): ratio {ratio:.2f}; one at a time "
              f"{daemon_serial / len(single) * 1000:.2f} ms vs "
              f"{raw_serial / len(single) * 1000:.2f} ms", flush=True)
        print(f"floor daemon (bench/floor_vmcreate.py) ms "
              f"{', '.join(f'{r.floor_s * 1000:.0f}' for r in rounds)} (median "
              f"{floor_concurrent * 1000:.0f}): floor/raw "
              f"{floor_ratio:.2f}, daemon/floor {vs_floor:.2f} (medians of rounds)", flush=True)
        print(f"CPU per create: daemon {daemon_cpu / args.creates * 1000:.2f} ms (all its "
              f"threads, RPC included) vs raw createXML {raw_cpu / args.creates * 1000:.2f} ms",
              flush=True)

        events = await status_events(client, [vm_id for vm_id, _ in batch[:args.events]])
        print(f"pause -> Paused event p50 {statistics.median(events):.1f} ms", flush=True)
        await client.close()
    finally:
        daemon.close()
    samples, layer, layer_raw = await in_process(uri, args.vms, args.creates)
    print(f"sampling passes (ms): {', '.join(f'{s:.0f}' for s in samples)}", flush=True)
    print(f"VM layer alone (VmManager.create x{args.creates} at once in this process, no "
          f"RPC): {layer * 1000:.0f} ms vs raw createXML {layer_raw * 1000:.0f} ms: ratio "
          f"{layer / layer_raw:.2f}", flush=True)
    result = {
        "vms": args.vms,
        "getallvmstats_p50_ms": round(statistics.median(times), 2),
        "getallvmstats_p99_ms": round(pct(times, 0.99), 2),
        "sampling_ms": round(statistics.median(samples), 1),
        "rss_mb": round(rss, 1),
        "recovery_s": round(recovery, 2),
        "create_overhead_ratio": round(ratio, 2),
        "create_latency_ratio": round(latency_ratio, 2),
        "create_daemon_cpu_ms": round(daemon_cpu / args.creates * 1000, 3),
        "create_raw_cpu_ms": round(raw_cpu / args.creates * 1000, 3),
        "create_vm_layer_ratio": round(layer / layer_raw, 2),
        "create_floor_ratio": round(floor_ratio, 2),
        "create_vs_floor_ratio": round(vs_floor, 2),
        "status_event_ms": round(statistics.median(events), 2),
    }
    print(json.dumps(result), flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
