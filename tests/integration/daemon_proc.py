"""Start a real ``vdsmd`` in a subprocess for tests and benchmarks, and stop it by PID.

Readiness is observed the way systemd observes it: the test owns a ``NOTIFY_SOCKET``
datagram socket and waits for ``READY=1``, so the systemd integration is exercised by every
test that starts a daemon.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DaemonProcess:
    """A running ``vdsmd --dev DIR``; ``notifications`` holds what it told systemd."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    notify_sock: socket.socket
    notify_sock_path: str
    notifications: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    def client_ssl_context(self):  # -> ssl.SSLContext
        """The dev host's own certificate, used as a client identity (as VDSM does)."""
        from vdsm_py.pki.layout import PkiPaths
        from vdsm_py.transport.tls import client_context

        paths = PkiPaths(self.pki_dir)
        return client_context(paths.cert, paths.key, paths.cacert)

    def read_notifications(self, timeout: float = 0.0) -> list[str]:
        self.notify_sock.settimeout(timeout if timeout > 0 else 0.001)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                self.notifications.append(self.notify_sock.recv(4096).decode())
                self.notify_sock.settimeout(0.001)
        return self.notifications

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("READY=1" in n for n in self.read_notifications(0.2)):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"vdsmd exited with {self.proc.returncode}:\n{self.log()}")
        raise RuntimeError(f"vdsmd not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait; SIGKILL it if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def close(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the daemon (``sig`` first) and remove the notify socket and its directory.

        Safe to call again, and after :meth:`stop`: a SIGKILLed daemon still leaves the
        test's own notify directory behind unless this runs.
        """
        self.stop(sig)
        self.notify_sock.close()
        sock_path = Path(self.notify_sock_path)
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        with contextlib.suppress(OSError):
            sock_path.parent.rmdir()


def start_daemon(
    root: Path,
    *,
    port: int | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    program: list[str] | None = None,
) -> DaemonProcess:
    """Start ``vdsmd --dev root``; with ``wait``, return once it notified READY=1.

    ``program`` replaces ``-m vdsm_py.cli.vdsmd`` (a script taking vdsmd's arguments, such
    as the benchmark's cut-down daemon).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix="vdsmd-notify-"))
    sock_path = sock_dir / "notify"
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_sock.bind(str(sock_path))
    log_path = root / "vdsmd.log"
    full_env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), **(env or {})}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, *(program or ["-m", "vdsm_py.cli.vdsmd"]), "--dev", str(root),
             "--port", str(port), *(extra_args or [])],
            stdout=log_file, stderr=log_file, env=full_env, cwd=REPO,
        )
    daemon = DaemonProcess(root, port, proc, log_path, notify_sock, str(sock_path))
    if wait:
        try:
            daemon.wait_ready()
        except BaseException:
            daemon.close()
            raise
    return daemon
