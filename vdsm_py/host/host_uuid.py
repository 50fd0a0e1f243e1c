"""The host's identity as the engine knows it: one UUID that must never change.

Owns choosing that UUID, in this order:

1. the configured ``[host] uuid`` (an admin's explicit choice wins);
2. a UUID this host generated earlier and kept in ``<state_dir>/host_uuid``;
3. the DMI product UUID (``/sys/class/dmi/id/product_uuid``, readable by root only), when
   it is a real one (not all zeros or all ones, which some firmware reports);
4. else a fresh random UUID, written atomically to ``<state_dir>/host_uuid`` so that it
   survives restarts.

(2) comes before (3) so that a host whose DMI UUID was unreadable once keeps the identity it
was registered with even if the file becomes readable later. Blocking: call from a worker.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path

from vdsm_py.host.paths import DEFAULT_PATHS, HostPaths, read_text

log = logging.getLogger("vdsm_py.host")

UUID_FILE = "host_uuid"


def _valid(text: str | None) -> str | None:
    if not text:
        return None
    try:
        value = uuid.UUID(text.strip())
    except ValueError:
        return None
    if value.int in (0, (1 << 128) - 1):
        return None
    return str(value)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def host_uuid(configured: str, state_dir: Path, paths: HostPaths = DEFAULT_PATHS) -> str:
    """The host UUID (see the module docstring for the order of sources)."""
    if configured.strip():
        value = _valid(configured)
        if value is None:
            # Reported as configured: the admin asked for exactly this identity.
            log.warning("configured host uuid %r is not a UUID; reporting it as is",
                        configured)
            return configured.strip()
        return value
    stored_path = state_dir / UUID_FILE
    stored_text = read_text(stored_path)
    stored = _valid(stored_text)
    if stored:
        return stored
    if stored_text is not None:
        log.warning("ignoring %s: not a UUID (%r)", stored_path, stored_text[:60])
    dmi = _valid(read_text(paths.dmi / "product_uuid"))
    if dmi:
        return dmi
    generated = str(uuid.uuid4())
    write_atomically(stored_path, generated + "\n")
    log.info("generated host uuid %s, kept in %s", generated, stored_path)
    return generated
