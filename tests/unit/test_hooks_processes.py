"""Hook script processes: signals, exec failures, timeouts, stray and cancelled processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.unit.hooks_support import DOMAIN, alive, install, py, sh, wait_dead
from vdsm_py.errors import HookError
from vdsm_py.hooks import HookRunner

# --- how scripts end ---------------------------------------------------------------


async def test_script_killed_by_a_signal_is_an_error(root, runner):
    install(root, "before_vm_start", "crash", sh("kill -SEGV $$\n"))
    with pytest.raises(HookError, match="killed by signal SIGSEGV"):
        await runner.run_xml("before_vm_start", DOMAIN)


async def test_script_that_cannot_be_executed_is_an_error(root, runner):
    install(root, "before_vm_start", "10_noshebang", "echo hi\n")
    install(root, "before_vm_start", "20_badinterp", "#!/nonexistent/interp\n")
    with pytest.raises(HookError) as info:
        await runner.run_xml("before_vm_start", DOMAIN)
    assert "10_noshebang (could not be started)" in info.value.message
    assert "20_badinterp (could not be started)" in info.value.message


# --- timeouts and stray processes ------------------------------------------------------


async def test_timeout_kills_the_script_and_its_grandchildren(root, tmp_dir):
    runner = HookRunner(root, timeout=1.0, tmp_dir=tmp_dir)
    pids = root.parent / "pids"
    later = root.parent / "later"
    install(
        root,
        "before_vm_start",
        "10_hang",
        sh(f"""
        sleep 300 &
        echo $! >> {pids}
        sh -c 'sleep 300 & echo $! >> {pids}; wait' &
        echo $$ >> {pids}
        wait
    """),
    )
    install(root, "before_vm_start", "20_later", sh(f"touch {later}\n"))
    with pytest.raises(HookError, match=r"10_hang \(timed out after 1 s"):
        await runner.run_xml("before_vm_start", DOMAIN)
    numbers = [int(p) for p in pids.read_text().split()]
    assert len(numbers) == 3
    for pid in numbers:
        assert wait_dead(pid), f"process {pid} of the timed-out hook survived"
    assert not later.exists(), "a timeout stops the chain"
    assert list(tmp_dir.iterdir()) == []


async def test_background_process_holding_output_does_not_hold_the_call(root, runner):
    pid_file = root.parent / "bg"
    install(
        root,
        "after_vm_start",
        "spawn",
        sh(f"""
        sleep 120 &
        echo $! > {pid_file}
        echo started >&2
        exit 0
    """),
    )
    start = time.monotonic()
    await runner.run_xml("after_vm_start", DOMAIN)
    pid = int(pid_file.read_text())
    try:
        assert time.monotonic() - start < 60, "the call waited for the background process"
        assert alive(pid), "a background process of a successful hook is left alone"
    finally:
        os.kill(pid, 9)


async def test_large_output_does_not_block_the_script(root, runner):
    install(
        root,
        "before_vm_start",
        "chatty",
        py("""
        import sys
        sys.stderr.write('x' * (4 << 20))
        sys.stdout.write('y' * (4 << 20))
        sys.exit(1)
    """),
    )
    with pytest.raises(HookError) as info:
        await runner.run_xml("before_vm_start", DOMAIN)
    assert len(info.value.message) < 10_000, "stderr is quoted, not copied whole"


async def test_cancelled_call_kills_the_running_script(root, runner):
    pid_file = root.parent / "pid"
    install(
        root,
        "before_vm_start",
        "hang",
        sh(f"""
        sleep 300 &
        echo $! > {pid_file}
        wait
    """),
    )
    task = asyncio.create_task(runner.run_xml("before_vm_start", DOMAIN))
    for _ in range(500):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_dead(int(pid_file.read_text()))
