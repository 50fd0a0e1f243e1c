"""Hook benchmark: what the daemon adds to each hook script, and what no hooks cost.

1. A chain of N trivial scripts (``#!/bin/sh`` + ``exit 0``) run by ``HookRunner.run_xml``
   over a real domain XML, against the same N scripts spawned one after another directly
   with asyncio (``create_subprocess_exec`` + ``wait``, output to /dev/null): the
   difference divided by N is the daemon's overhead per script (target <= 10 ms). Rounds of
   the two alternate so that machine noise hits both alike; medians are reported.
2. ``run_xml`` on a hook point without scripts (no directory, and an empty directory):
   microseconds per call (target: not measurable next to a VM start).

    .venv/bin/python bench/hooks.py [--scripts 20] [--rounds 15]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vdsm_py.hooks import HookRunner

DOMAIN_XML = (REPO / "hooks" / "examples" / "testdata" / "domain.xml").read_text()


def install_chain(root: Path, point: str, count: int) -> list[str]:
    directory = root / point
    directory.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = directory / f"{i:03d}_noop"
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
        paths.append(str(path))
    return paths


async def direct(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        proc = await asyncio.create_subprocess_exec(
            path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await proc.wait()
    return time.perf_counter() - start


async def through_runner(runner: HookRunner, point: str) -> float:
    start = time.perf_counter()
    out = await runner.run_xml(point, DOMAIN_XML, vm_id="bench-vm", custom={"prop": "v"})
    elapsed = time.perf_counter() - start
    assert out == DOMAIN_XML
    return elapsed


async def empty_point_cost(runner: HookRunner, point: str, calls: int) -> float:
    """Microseconds per run_xml call on a point with nothing to run."""
    start = time.perf_counter()
    for _ in range(calls):
        await runner.run_xml(point, DOMAIN_XML, vm_id="bench-vm")
    return (time.perf_counter() - start) / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scripts", type=int, default=20, help="scripts in the chain")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds of each")
    parser.add_argument("--empty-calls", type=int, default=20000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vdsm_py-bench-hooks-") as tmp:
        root = Path(tmp) / "hooks"
        paths = install_chain(root, "before_vm_start", args.scripts)
        (root / "before_vm_cont").mkdir()
        runner = HookRunner(root, timeout=60)

        # Warm-up: page cache, interpreter paths, the loop's child watcher.
        await direct(paths[:3])
        await through_runner(runner, "before_vm_start")

        runner_times, direct_times = [], []
        for _ in range(args.rounds):
            runner_times.append(await through_runner(runner, "before_vm_start"))
            direct_times.append(await direct(paths))

        no_dir_us = await empty_point_cost(runner, "before_vm_pause", args.empty_calls)
        empty_dir_us = await empty_point_cost(runner, "before_vm_cont", args.empty_calls)

    runner_ms = statistics.median(runner_times) * 1000
    direct_ms = statistics.median(direct_times) * 1000
    per_script = (runner_ms - direct_ms) / args.scripts
    result = {
        "scripts": args.scripts,
        "rounds": args.rounds,
        "chain_through_runner_ms": round(runner_ms, 3),
        "chain_spawned_directly_ms": round(direct_ms, 3),
        "per_script_ms_runner": round(runner_ms / args.scripts, 3),
        "per_script_ms_direct": round(direct_ms / args.scripts, 3),
        "per_script_overhead_ms": round(per_script, 3),
        "per_script_overhead_target_ms": 10.0,
        "no_scripts_no_dir_us": round(no_dir_us, 2),
        "no_scripts_empty_dir_us": round(empty_dir_us, 2),
    }
    print(
        f"chain of {args.scripts}: runner {runner_ms:.1f} ms, direct {direct_ms:.1f} ms "
        f"-> {per_script:.3f} ms overhead per script"
    )
    print(f"no scripts: {no_dir_us:.1f} us (no directory), {empty_dir_us:.1f} us (empty)")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
