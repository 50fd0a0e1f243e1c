"""Fixtures for integration tests: real daemons in subprocesses, stopped even on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_proc import DaemonProcess, start_daemon


@pytest.fixture
def dev_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A ``vdsmd --dev`` host on a free loopback port, with its own PKI under tmp_path."""
    daemon = start_daemon(tmp_path / "host")
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator:
    """Start several daemons (or one with special arguments); all are stopped at the end."""
    started: list[DaemonProcess] = []

    def start(name: str = "host", **kwargs) -> DaemonProcess:
        daemon = start_daemon(tmp_path / name, **kwargs)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.close()

# Real libvirtd + QEMU fixtures (libvirtd, libvirtd_factory, conn, tiny_guest).
from tests.integration.conftest_libvirt import (  # noqa: F401
    conn,
    libvirtd,
    libvirtd_factory,
    tiny_guest,
)
