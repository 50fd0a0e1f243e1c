"""A real ``vdsmd --dev`` host whose VMs run on a private libvirtd with QEMU.

``start_qemu_host(root, libvirtd)`` writes the development host's configuration, points its
``[virt]`` section at the private libvirtd (domain type ``qemu``: TCG, since this machine's
KVM cannot boot a stock kernel) with short intervals fit for tests, starts the daemon and
connects a client over the real mutual-TLS API. ``restart`` kills the daemon (SIGKILL by
default) and starts it again on the same directory and port, as systemd would.
"""

from __future__ import annotations

import configparser
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.daemon_proc import DaemonProcess, free_port, start_daemon
from tests.integration.libvirtd import LibvirtdInstance

# Short intervals: stats and guest agent queries every 2 s, "Up" 3 s after start when no
# guest agent answers.
TEST_VIRT_SETTINGS = {
    "domain_type": "qemu",
    "stats_interval": "2",
    "guest_agent_interval": "2",
    "powering_up_timeout": "3",
    "shutdown_timeout": "60",
    "graphics_listen": "127.0.0.1",
}


@dataclass
class QemuHost:
    root: Path
    port: int
    libvirtd: LibvirtdInstance
    daemon: DaemonProcess
    _clients: list[Any] = field(default_factory=list)

    def client(self) -> Any:
        """A new connected :class:`vdsm_py.client.SyncClient`, closed by :meth:`close`."""
        from vdsm_py.client import SyncClient

        client = SyncClient().connect(
            "127.0.0.1", self.port, ssl_context=self.daemon.client_ssl_context(), timeout=30
        )
        self._clients.append(client)
        return client

    def call(self, method: str, **params: Any) -> Any:
        """One call on a fresh connection (survives daemon restarts)."""
        client = self.client()
        try:
            return client.call(method, params, timeout=120)
        finally:
            client.close()
            self._clients.remove(client)

    def restart(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self._close_clients()
        self.daemon.close(sig)
        self.daemon = start_daemon(self.root, port=self.port)

    def _close_clients(self) -> None:
        while self._clients:
            self._clients.pop().close()

    def close(self) -> None:
        self._close_clients()
        self.daemon.close()


def write_config(root: Path, port: int, uri: str, virt: dict[str, str] | None = None) -> None:
    """The development host's configuration with ``[virt]`` on ``uri``."""
    from vdsm_py import devhost

    devhost.prepare(root, port)
    conf = root / devhost.CONF_NAME
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    if not parser.has_section("virt"):
        parser.add_section("virt")
    for key, value in {"libvirt_uri": uri, **TEST_VIRT_SETTINGS, **(virt or {})}.items():
        parser.set("virt", key, value)
    with open(conf, "w", encoding="utf-8") as f:
        parser.write(f)


def start_qemu_host(
    root: Path, libvirtd: LibvirtdInstance, virt: dict[str, str] | None = None
) -> QemuHost:
    port = free_port()
    write_config(root, port, libvirtd.uri, virt)
    return QemuHost(root, port, libvirtd, start_daemon(root, port=port))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something true; return it or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout}s (last: {last!r:.500})")
        time.sleep(interval)
