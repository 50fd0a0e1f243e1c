"""What the engine-lite integration tests share: fast engine settings, dev hosts they can
kill, freeze and restart (always stopped by PID), and enrollment through the engine.

The dev hosts are real ``vdsmd --dev`` daemons (libvirt test driver), each with its own
port and PKI; see :mod:`tests.integration.daemon_proc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.daemon_proc import REPO, DaemonProcess, start_daemon

sys.path.insert(0, str(REPO / "contrib" / "engine-lite"))

from engine_lite.config import EngineConfig
from engine_lite.engine import Engine
from engine_lite.hostside import LocalHostAgent
from engine_lite.models import HostStatus

from vdsm_py.client import RpcError
from vdsm_py.pki.layout import PkiPaths

UP = HostStatus.UP
# The host reports a new VM "Powering up" until its guest is seen (or a timeout): running.
RUNNING = ("Powering up", "Up")
WAIT = 60.0  # generous liveness bound
AGENT_ENV = {"PYTHONPATH": str(REPO)}


def fast_config(state: Path, **overrides: object) -> EngineConfig:
    settings: dict[str, object] = {
        "vm_stats_interval": 0.5, "host_stats_interval": 1.0, "heartbeat_ms": 1000,
        "call_timeout": 5.0, "connect_timeout": 5.0, "nonresponsive_after": 3.0,
        "backoff_initial": 0.2, "backoff_max": 1.0, "enroll_timeout": WAIT,
    }
    settings.update(overrides)
    return EngineConfig.load(state, **settings)  # type: ignore[arg-type]


@dataclass
class DevHost:
    """A dev host the test can kill and restart; the current process is always tracked."""

    root: Path
    port: int
    proc: DaemonProcess

    async def restart(self) -> None:
        await asyncio.to_thread(self.proc.close)
        await self.start()

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(start_daemon, self.root, port=self.port)

    async def reload(self) -> None:
        """Apply new certificates as vdsmd does: SIGHUP, no restart."""
        self.proc.proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        self.proc.close(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the process lives on (and keeps its VMs) but answers nothing."""
        self.proc.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc.proc.poll() is None:
            self.proc.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.thaw()  # a stopped process would not act on SIGTERM
        self.proc.close()

    @property
    def pki(self) -> PkiPaths:
        return PkiPaths(self.root / "pki")

    @property
    def lock_file(self) -> Path:
        """Where the daemon records its PID (what a fence agent may use)."""
        return self.root / "run" / "vdsmd.lock"

    def agent(self) -> LocalHostAgent:
        return LocalHostAgent.for_pki_dir(self.pki.root, "127.0.0.1", env=AGENT_ENV)


@contextlib.asynccontextmanager
async def dev_hosts(root: Path, count: int) -> AsyncIterator[list[DevHost]]:
    """``count`` dev hosts started in parallel; all stopped by PID on the way out."""
    started: list[DevHost] = []

    async def one(name: str) -> None:
        proc = await asyncio.to_thread(start_daemon, root / name)
        started.append(DevHost(root / name, proc.port, proc))

    try:
        await asyncio.gather(*(one(f"host{i + 1}") for i in range(count)))
        started.sort(key=lambda h: h.root.name)
        yield started
    finally:
        await asyncio.gather(*(asyncio.to_thread(h.close) for h in started))


@contextlib.asynccontextmanager
async def running_engine(state: Path, **overrides: object) -> AsyncIterator[Engine]:
    eng = Engine(fast_config(state, **overrides), agent_env=AGENT_ENV)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


async def enroll(engine: Engine, name: str, host: DevHost) -> None:
    await engine.add_host(name, "127.0.0.1", host.port, host.agent(), apply=host.reload)


async def vm_verbs_available(engine: Engine, host_name: str) -> bool:
    try:
        await engine.ctx.monitors[engine.host(host_name).id].call("Host.getVMList")
    except RpcError as exc:
        if exc.code == -32601:
            return False
        raise
    return True


async def wait_events(engine: Engine, kind: str, count: int = 1) -> list[str]:
    """Messages of the events of ``kind`` once there are ``count`` of them (the event log is
    in the database, so it is polled)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        found = [e.message for e in await engine.events(1000) if e.kind == kind]
        if len(found) >= count:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{len(found)} {kind} event(s) after {WAIT:g} s, not {count}")
        await asyncio.sleep(0.2)
