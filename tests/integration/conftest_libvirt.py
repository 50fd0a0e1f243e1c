"""Session fixtures for tests against a real, private libvirtd with QEMU and a tiny guest.

Imported by tests/integration/conftest.py. Fixtures:

- ``libvirtd``: one private libvirtd (+ virtlogd) for the whole session, a
  :class:`~tests.integration.libvirtd.LibvirtdInstance` (``.uri``, ``.connect()``, logs);
- ``libvirtd_factory``: ``start(name)`` more instances (two hosts, for migration); all are
  stopped at the end of the session, by PID, whatever happened;
- ``conn``: a libvirt connection to ``libvirtd`` for one test, closed after it;
- ``tiny_guest``: the kernel + busybox initramfs of :mod:`tests.integration.guest`.

They skip (with the reason) only when the machine lacks the binaries, kernel or busybox.
Files reused across sessions (the initramfs, libvirt's QEMU capabilities) are cached under
``$VDSM_PY_TEST_CACHE`` (default ``/var/tmp/vdsm_py-tests``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration import guest
from tests.integration.libvirtd import LibvirtdInstance, missing_binaries, start_libvirtd


def cache_dir() -> Path:
    return Path(os.environ.get("VDSM_PY_TEST_CACHE", "/var/tmp/vdsm_py-tests"))


@pytest.fixture(scope="session")
def libvirtd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], LibvirtdInstance]]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"real libvirtd tests need {', '.join(missing)} "
            "(apt-get install libvirt-daemon-system qemu-system-x86)"
        )
    started: list[LibvirtdInstance] = []
    caps_cache = cache_dir() / "libvirt-qemu-capabilities"

    def start(name: str = "libvirtd") -> LibvirtdInstance:
        instance = start_libvirtd(tmp_path_factory.mktemp(name), caps_cache=caps_cache)
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in reversed(started):
            instance.stop()


@pytest.fixture(scope="session")
def libvirtd(libvirtd_factory: Callable[[str], LibvirtdInstance]) -> LibvirtdInstance:
    return libvirtd_factory("libvirtd")


@pytest.fixture
def conn(libvirtd: LibvirtdInstance) -> Iterator:
    connection = libvirtd.connect()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def tiny_guest() -> guest.GuestImage:
    try:
        return guest.build_guest(cache_dir() / "guest")
    except guest.GuestUnavailable as exc:
        pytest.skip(f"tiny guest unavailable: {exc}")
