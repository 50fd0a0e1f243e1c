"""Looking at a host's VM lease keepers from a test: their processes, their records, and
what ``sanlock client status`` says they hold; and a fixture that kills (by PID) any keeper
a failed test left under its temporary directory."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.lease_keeper import MODULE, KeeperRecord, record_path
from tests.integration.sanlock_daemon import SanlockDaemon


def keepers_dir(host_root: Path) -> Path:
    """Where a daemon rooted at ``host_root`` keeps its keeper records ([daemon] run_dir)."""
    return host_root.resolve() / "run" / "vm-leases"


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def keeper_pids(under: Path, vm_id: str | None = None) -> list[int]:
    """Live keeper processes whose record directory is ``under`` (or below it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _argv(int(entry))
        if MODULE not in argv or "--dir" not in argv:
            continue
        directory = argv[argv.index("--dir") + 1]
        if not (directory == str(under) or directory.startswith(f"{under}/")):
            continue
        if vm_id is None or argv[argv.index("--vm-id") + 1] == vm_id:
            found.append(int(entry))
    return sorted(found)


def record(host_root: Path, key: str) -> KeeperRecord | None:
    """The record of keeper ``key``: a VM's (its vmId) or a drive's (``<vmId>.<volUUID>``)."""
    return KeeperRecord.load(record_path(keepers_dir(host_root), key))


def holder(sanlock: SanlockDaemon, lockspace: str, name: str) -> int | None:
    """The pid sanlock names as the holder of resource ``name`` of ``lockspace``."""
    for line in sanlock.client_status().splitlines():
        parts = line.split()
        if parts[:1] == ["r"] and parts[1].startswith(f"{lockspace}:{name}:"):
            return int(parts[parts.index("p") + 1])
    return None


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def keeper_reaper(tmp_path: Path) -> Iterator[None]:
    """After the test: no keeper under tmp_path survives (SIGKILL by PID)."""
    yield
    for pid in keeper_pids(tmp_path.resolve()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
