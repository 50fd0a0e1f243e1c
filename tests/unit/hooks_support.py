"""Helpers shared by the hook runner tests: writing hook scripts and watching their processes.

Owns only test plumbing (script bodies, installation into a hooks tree, /proc checks); the
fixtures built on it (``root``, ``tmp_dir``, ``runner``) live in tests/unit/conftest.py.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

PY = sys.executable
DOMAIN = "<domain type='kvm'><name>vm1</name><devices/></domain>"


def install(root: Path, point: str, name: str, body: str, mode: int = 0o755) -> Path:
    """Write ``body`` as hook script ``name`` of ``point`` under ``root``, with ``mode``."""
    directory = root / point
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(mode)
    return path


def sh(body: str) -> str:
    """A /bin/sh script running ``body``."""
    return "#!/bin/sh\n" + textwrap.dedent(body).lstrip()


def py(body: str) -> str:
    """A script running ``body`` with the test's own Python (so ``hooking`` imports work)."""
    return f"#!{PY}\n" + textwrap.dedent(body).lstrip()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pid: int, limit: float = 10.0) -> bool:
    """Wait up to ``limit`` seconds for ``pid`` to die; whether it did."""
    deadline = time.monotonic() + limit
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
