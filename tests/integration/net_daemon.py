"""A real ``vdsmd --dev`` managing the networks of a test namespace (tests and bench).

The daemon process runs in the test's own namespace (so the client reaches it on loopback)
and manages the links of ``TestHost``'s namespace through ``[network] netns``, treating the
``veth_*`` devices there as NICs. The config file is written before the first start, with
optional overrides per section; the daemon is stopped by PID by the caller
(:meth:`DaemonProcess.close`). :func:`connected` gives a client of it.
"""

from __future__ import annotations

import configparser
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from tests.integration.daemon_proc import DaemonProcess, start_daemon
from vdsm_py.client import Client
from vdsm_py.devhost import CONF_NAME, dev_settings


def write_net_config(
    root: Path, netns: str, overrides: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(dev_settings(root.resolve()))
    parser.read_dict({"network": {"netns": netns, "fake_nics": "veth_*"}})
    parser.read_dict(overrides or {})
    with open(root / CONF_NAME, "w", encoding="utf-8") as f:
        parser.write(f)


def start_net_daemon(
    root: Path,
    netns: str,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
    *,
    log_level: str = "INFO",
) -> DaemonProcess:
    """Start a dev host managing ``netns``; returns once it notified READY=1."""
    if not (root / CONF_NAME).exists():
        write_net_config(root, netns, overrides)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    return start_daemon(root, extra_args=["--log-level", log_level], env={"TMPDIR": str(tmp)})


@asynccontextmanager
async def connected(daemon: DaemonProcess) -> AsyncIterator[Client]:
    """A client of ``daemon`` over mutual TLS, closed on the way out."""
    client = await Client.connect("127.0.0.1", daemon.port,
                                  ssl_context=daemon.client_ssl_context())
    try:
        yield client
    finally:
        await client.close()
