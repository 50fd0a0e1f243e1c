"""A private, unprivileged sanlock daemon for tests (own SANLOCK_RUN_DIR, no watchdog).

Started as ``sanlock daemon -D -w 0`` with SANLOCK_PRIVILEGED=0, stopped by its PID even
when a test fails (SIGTERM, then SIGKILL). Tests must release their leases and lockspaces
before it stops: sanlock kills a process that still holds leases in a lockspace being
removed.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SANLOCK = "/usr/sbin/sanlock"


@dataclass
class SanlockDaemon:
    run_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SANLOCK_RUN_DIR": str(self.run_dir), "SANLOCK_PRIVILEGED": "0"}

    def client_status(self) -> str:
        return subprocess.run([SANLOCK, "client", "status"], env=self.env, capture_output=True,
                              text=True, timeout=30, check=True).stdout

    def stop(self) -> None:
        """Ask it to shut down (forced: lockspaces a failed test left), then by PID."""
        if self.proc.poll() is not None:
            return
        subprocess.run([SANLOCK, "client", "shutdown", "-f", "1"], env=self.env,
                       capture_output=True, timeout=30, check=False)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_sanlock(run_dir: Path) -> SanlockDaemon:
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SANLOCK_RUN_DIR": str(run_dir), "SANLOCK_PRIVILEGED": "0"}
    log = open(run_dir / "sanlock.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([SANLOCK, "daemon", "-D", "-w", "0"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    daemon = SanlockDaemon(run_dir, proc)
    deadline = time.monotonic() + 15
    while not (run_dir / "sanlock.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            raise RuntimeError(f"sanlock did not start: {(run_dir / 'sanlock.log').read_text()}")
        time.sleep(0.05)
    return daemon


# sanlock's client library reads SANLOCK_RUN_DIR once per process, so every test in one
# pytest process must talk to the same daemon as "host 1": one shared daemon, started on
# first use and stopped by PID when the process exits (other hosts run in child processes
# with their own daemons).
_shared: SanlockDaemon | None = None


def shared_sanlock(base: Path) -> SanlockDaemon:
    global _shared
    if _shared is None or _shared.proc.poll() is not None:
        _shared = start_sanlock(base / "sanlock-host1")
        atexit.register(_shared.stop)
    return _shared
