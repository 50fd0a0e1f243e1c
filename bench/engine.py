"""engine-lite benchmark: the engine monitoring many real ``vdsmd --dev`` hosts.

Starts ``--hosts`` daemons (libvirt test driver, each with its own port and PKI), enrolls
them with an engine-lite running in THIS process (its CA signs each host's CSR, the daemon
reloads on SIGHUP), defines and starts ``--vms`` VMs per host through the engine, then,
at the engine's default intervals (VM stats 3 s, host stats 15 s, heart-beat 10 s):

- ``engine_cpu_pct``: CPU time of this process (all its threads: the engine's event loop
  and its database thread; the daemons are other processes) over a ``--window`` second
  steady state, as a percentage of one core; ``engine_loop_cpu_pct`` is the event-loop
  thread alone. Baseline ``raw_poll_cpu_pct``: after the engine is closed, plain
  ``vdsm_py`` clients in this process poll the same hosts with the same verbs at the same
  intervals and drop the answers (the protocol's cost without any engine logic);
- ``event_latency_ms`` (p50, and ``_p99``): a VM is paused/resumed through a separate
  observer connection; time from sending the verb until the engine's state (memory and
  database) shows the new status. Baseline ``raw_event_ms``: the same event's arrival at the
  observer's own event subscription, in the same trial;
- ``schedule_ms`` (p50, and ``_p99``): ``engine.vms.start`` of a new VM with every host
  running its VMs: scheduling over all hosts, the write-through, and the ``VM.create``
  round trip. ``schedule_only_ms``: the scheduling decision alone; baseline
  ``create_call_ms``: a raw ``VM.create`` round trip from the observer.

    .venv/bin/python bench/engine.py [--hosts 50] [--vms 20] [--window 45]

Memory is watched while daemons start (it stops starting them below ``--min-free-mb``).
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "contrib" / "engine-lite"))

from engine_lite.config import EngineConfig
from engine_lite.engine import Engine
from engine_lite.hostside import LocalHostAgent
from engine_lite.models import HostStatus, Vm
from engine_lite.vmdef import vm_params

from tests.integration.daemon_proc import DaemonProcess, start_daemon
from vdsm_py.client.aio import Client

STATUS_PREFIX = "|virt|VM_status|"
ENV = {"PYTHONPATH": str(REPO)}


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def say(text: str) -> None:
    print(text, flush=True)


async def start_daemons(root: Path, count: int, parallel: int,
                        min_free_mb: float) -> list[DaemonProcess]:
    gate = asyncio.Semaphore(parallel)
    started: list[DaemonProcess] = []

    async def one(i: int) -> None:
        async with gate:
            if mem_available_mb() < min_free_mb:
                raise MemoryError(f"only {mem_available_mb():.0f} MB available; not starting "
                                  f"more daemons (have {len(started)})")
            started.append(await asyncio.to_thread(start_daemon, root / f"host{i:02d}"))

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await asyncio.to_thread(stop_daemons, started)
        raise errors[0]
    return sorted(started, key=lambda d: d.root.name)


def stop_daemons(daemons: list[DaemonProcess]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(DaemonProcess.close, daemons))


async def enroll_all(engine: Engine, daemons: list[DaemonProcess], parallel: int) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(d: DaemonProcess) -> None:
        async with gate:
            agent = LocalHostAgent.for_dev_host(d.root, "127.0.0.1", env=ENV)
            await engine.add_host(d.root.name, "127.0.0.1", d.port, agent)

    await asyncio.gather(*(one(d) for d in daemons))


async def start_vms(engine: Engine, names: list[str], parallel: int) -> list[float]:
    gate = asyncio.Semaphore(parallel)
    took: list[float] = []

    async def one(name: str) -> None:
        async with gate:
            t0 = time.perf_counter()
            await engine.vms.start(name)
            took.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(one(n) for n in names))
    return took


class Observer:
    """A plain client on one host, subscribed to its events: when each status arrived."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.waiting: dict[tuple[str, str], asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int, ssl_context: Any) -> Observer:
        client = await Client.connect("127.0.0.1", port, ssl_context=ssl_context)
        self = cls(client)
        events = await client.subscribe_events(confirm=True)
        self._task = asyncio.create_task(self._watch(events))
        return self

    async def _watch(self, events: Any) -> None:
        async for method, params in events:
            if not method.startswith(STATUS_PREFIX):
                continue
            vm_id = method[len(STATUS_PREFIX):]
            status = str((params.get(vm_id) or {}).get("status"))
            future = self.waiting.pop((vm_id, status), None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    def expect(self, vm_id: str, status: str) -> asyncio.Future[float]:
        future = asyncio.get_running_loop().create_future()
        self.waiting[(vm_id, status)] = future
        return future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()


def has_status(vm: Vm, status: str) -> Callable[[], bool]:
    return lambda: vm.status == status


async def event_trials(engine: Engine, observers: dict[str, Observer],
                       trials: int) -> tuple[list[float], list[float]]:
    """(engine state latencies, raw observer latencies), ms, one pair per status change."""
    by_host: dict[str, list[Vm]] = {}
    for vm in engine.ctx.vms.values():
        if vm.host_id in observers and vm.status == "Up":
            by_host.setdefault(vm.host_id, []).append(vm)
    engine_ms: list[float] = []
    raw_ms: list[float] = []
    hosts = sorted(by_host)
    for i in range(trials):
        host_id = hosts[i % len(hosts)]
        vm = random.choice(by_host[host_id])
        observer = observers[host_id]
        for verb, status in (("VM.pause", "Paused"), ("VM.cont", "Up")):
            seen = observer.expect(vm.id, status)
            t0 = time.perf_counter()
            await observer.client.call(verb, {"vmID": vm.id})
            await engine.ctx.wait_until(has_status(vm, status), 30)
            engine_ms.append((time.perf_counter() - t0) * 1000)
            raw_ms.append((await asyncio.wait_for(seen, 30) - t0) * 1000)
        await asyncio.sleep(0.05)
    return engine_ms, raw_ms


async def start_trials(engine: Engine, observer: Observer, trials: int,
                       mem: int) -> dict[str, list[float]]:
    """New VMs started (and stopped) through the engine with every host busy; a raw
    VM.create/destroy from the observer as the baseline."""
    out: dict[str, list[float]] = {"start": [], "schedule": [], "create": []}
    for i in range(trials):
        vm = await engine.vms.create(f"probe-{i:03d}", mem)
        t0 = time.perf_counter()
        engine.vms.schedule(vm)
        out["schedule"].append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await engine.vms.start(vm.id)
        out["start"].append((time.perf_counter() - t0) * 1000)
        await engine.ctx.wait_until(has_status(vm, "Up"), 30)
        await engine.vms.stop(vm.id)
        raw = Vm(str(uuid.uuid4()), f"raw-{i:03d}", vm.cluster_id, mem)
        t0 = time.perf_counter()
        await observer.client.call("VM.create", {"vmID": raw.id, "vmParams": vm_params(raw)})
        out["create"].append((time.perf_counter() - t0) * 1000)
        await observer.client.call("VM.destroy", {"vmID": raw.id})
    return out


async def raw_polling(hosts: list[tuple[int, Any]], cfg: EngineConfig,
                      window: float) -> float:
    """CPU % of plain clients polling like the engine's monitors, answers dropped."""
    clients = [await Client.connect("127.0.0.1", port, ssl_context=ctx,
                                    heartbeat=(cfg.heartbeat_ms, cfg.heartbeat_ms))
               for port, ctx in hosts]

    async def poll(client: Client, method: str, interval: float) -> None:
        while True:
            await client.call(method)
            await asyncio.sleep(interval)

    tasks = [asyncio.create_task(poll(c, m, i)) for c in clients for m, i in
             (("Host.getAllVmStats", cfg.vm_stats_interval),
              ("Host.getStats", cfg.host_stats_interval),
              ("Host.getStorageRepoStats", cfg.host_stats_interval))]
    subs = [await c.subscribe_events() for c in clients]
    drains = [asyncio.create_task(_drain(s)) for s in subs]
    await asyncio.sleep(cfg.vm_stats_interval * 2)
    c0, w0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(window)
    used = (cpu_seconds() - c0) / (time.monotonic() - w0) * 100
    for task in tasks + drains:
        task.cancel()
    await asyncio.gather(*tasks, *drains, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients))
    return used


async def _drain(events: Any) -> None:
    async for _ in events:
        pass


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    say(f"starting {args.hosts} daemons ({mem_available_mb():.0f} MB available)")
    daemons = await start_daemons(root / "hosts", args.hosts, args.parallel, args.min_free_mb)
    try:
        return await measure(args, root, daemons, time.monotonic() - t0)
    finally:
        await asyncio.to_thread(stop_daemons, daemons)


async def measure(args: argparse.Namespace, root: Path, daemons: list[DaemonProcess],
                  started_s: float) -> dict[str, Any]:
    say(f"  {len(daemons)} daemons ready in {started_s:.1f} s; daemons' RSS "
        f"{sum(rss_mb(d.pid) for d in daemons):.0f} MB, {mem_available_mb():.0f} MB available")
    engine = Engine(EngineConfig.load(root / "engine"), agent_env=ENV)
    result: dict[str, Any] = {"hosts": len(daemons), "vms_per_host": args.vms,
                              "daemons_start_s": round(started_s, 1)}
    observers: dict[str, Observer] = {}
    ssl_context = engine.ca.client_context()
    try:
        await engine.start()
        t0 = time.monotonic()
        await enroll_all(engine, daemons, args.parallel)
        result["enroll_s"] = round(time.monotonic() - t0, 1)
        assert all(h.status == HostStatus.UP for h in engine.list_hosts())
        say(f"enrolled {len(daemons)} hosts in {result['enroll_s']} s")

        names = [f"vm-{i:04d}" for i in range(args.hosts * args.vms)]
        for name in names:
            await engine.vms.create(name, args.mem)
        t0 = time.monotonic()
        fill = await start_vms(engine, names, args.parallel)
        vms = list(engine.ctx.vms.values())
        await engine.ctx.wait_until(lambda: all(v.status == "Up" for v in vms), 300)
        per_host = {h.id: 0 for h in engine.list_hosts()}
        for vm in vms:
            per_host[vm.host_id or ""] += 1
        say(f"{len(vms)} VMs Up in {time.monotonic() - t0:.1f} s (starts p50 "
            f"{statistics.median(fill):.1f} ms at up to {args.parallel} at once); VMs per "
            f"host {min(per_host.values())}..{max(per_host.values())}")
        result["fill_start_p50_ms"] = round(statistics.median(fill), 1)
        # none expected: every VM was started and none stopped
        downs = [e for e in await engine.events(10000) if e.kind == "vm_down"]
        result["spurious_vm_down_events"] = len(downs)

        await asyncio.sleep(args.settle)
        c0, th0, w0 = cpu_seconds(), time.thread_time(), time.monotonic()
        await asyncio.sleep(args.window)
        wall = time.monotonic() - w0
        result["engine_cpu_pct"] = round((cpu_seconds() - c0) / wall * 100, 2)
        result["engine_loop_cpu_pct"] = round((time.thread_time() - th0) / wall * 100, 2)
        result["engine_rss_mb"] = round(rss_mb(os.getpid()))
        result["daemons_rss_mb"] = round(sum(rss_mb(d.pid) for d in daemons))
        result["loadavg_1m"] = os.getloadavg()[0]
        say(f"steady state over {wall:.0f} s: engine process CPU {result['engine_cpu_pct']} % "
            f"of one core (event loop {result['engine_loop_cpu_pct']} %), engine RSS "
            f"{result['engine_rss_mb']} MB, daemons {result['daemons_rss_mb']} MB, load "
            f"{result['loadavg_1m']:.1f}")

        for host in engine.list_hosts()[:args.observed]:
            observers[host.id] = await Observer.open(host.port, ssl_context)
        engine_ms, raw_ms = await event_trials(engine, observers, args.events)
        result.update(
            event_latency_ms=round(statistics.median(engine_ms), 1),
            event_latency_p99_ms=round(pct(engine_ms, 0.99), 1),
            raw_event_ms=round(statistics.median(raw_ms), 1),
            engine_event_overhead_ms=round(statistics.median(
                [e - r for e, r in zip(engine_ms, raw_ms, strict=True)]), 1))
        say(f"status change -> engine state p50 {result['event_latency_ms']} ms, p99 "
            f"{result['event_latency_p99_ms']} ms ({len(engine_ms)} changes); the raw event "
            f"at the observer p50 {result['raw_event_ms']} ms")

        first = next(iter(observers.values()))
        trials = await start_trials(engine, first, args.starts, args.mem)
        result.update(
            schedule_ms=round(statistics.median(trials["start"]), 1),
            schedule_p99_ms=round(pct(trials["start"], 0.99), 1),
            schedule_only_ms=round(statistics.median(trials["schedule"]), 2),
            create_call_ms=round(statistics.median(trials["create"]), 1))
        say(f"VM start decision (schedule + VM.create) at {len(daemons)} hosts / "
            f"{len(vms)} VMs: p50 {result['schedule_ms']} ms, p99 {result['schedule_p99_ms']}"
            f" ms; scheduling alone {result['schedule_only_ms']} ms; raw VM.create round "
            f"trip {result['create_call_ms']} ms")
    finally:
        for observer in observers.values():
            await observer.close()
        cfg = engine.config
        with contextlib.suppress(AttributeError):
            await engine.close()
    if "engine_cpu_pct" in result:
        hosts = [(d.port, ssl_context) for d in daemons]
        result["raw_poll_cpu_pct"] = round(await raw_polling(hosts, cfg, args.window), 2)
        result["cpu_ratio_vs_raw"] = round(
            result["engine_cpu_pct"] / max(result["raw_poll_cpu_pct"], 0.01), 2)
        say(f"baseline: plain clients polling the same hosts at the same intervals "
            f"{result['raw_poll_cpu_pct']} % (engine / raw = {result['cpu_ratio_vs_raw']})")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--vms", type=int, default=20, help="VMs per host")
    p.add_argument("--mem", type=int, default=64, help="MiB per VM")
    p.add_argument("--window", type=float, default=45.0, help="steady-state seconds")
    p.add_argument("--settle", type=float, default=10.0, help="seconds before the window")
    p.add_argument("--events", type=int, default=40, help="pause/resume trials")
    p.add_argument("--observed", type=int, default=10, help="hosts with an observer")
    p.add_argument("--starts", type=int, default=30, help="start trials")
    p.add_argument("--parallel", type=int, default=6, help="daemons started/enrolled at once")
    p.add_argument("--min-free-mb", type=float, default=3000.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  engine-lite %(levelname)s %(message)s")
    root = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        result = asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
