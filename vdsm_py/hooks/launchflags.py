"""The VM launch-flags file that ``before_vm_start`` hooks may read and rewrite.

VDSM writes the libvirt flags it will pass to ``createXML`` (for example
``VIR_DOMAIN_START_PAUSED``) to a per-VM file before running ``before_vm_start``, lets the
scripts change them through ``hooking.load_vm_launch_flags_from_file`` /
``hooking.dump_vm_launch_flags_to_file``, and reads them back afterwards.

Layout: ``<run dir>/launchflags/<vmId>``, one decimal integer. The daemon hands the run
directory to scripts in the ``_hook_run_dir`` environment variable. ``hooks/hooking.py``
implements the same layout on its own (it must import nothing from vdsm_py, because hook
scripts may run under any Python); ``tests/unit/test_hooks_hooking.py`` pins that the two
agree.

Must not run scripts; blocking only on a small file in the run directory (tmpfs).
"""

from __future__ import annotations

import os
from pathlib import Path

RUN_DIR_ENV = "_hook_run_dir"
SUBDIR = "launchflags"


def _flags_file(run_dir: Path, vm_id: str) -> Path:
    if not vm_id or "/" in vm_id or vm_id in (".", "..") or "\0" in vm_id:
        raise ValueError(f"invalid VM id for a launch-flags file: {vm_id!r}")
    return Path(run_dir) / SUBDIR / vm_id


def dump(run_dir: Path, vm_id: str, flags: int) -> None:
    """Write ``flags`` for ``vm_id`` atomically (write, fsync-free rename on tmpfs)."""
    path = _flags_file(run_dir, vm_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{vm_id}.tmp")
    tmp.write_text(str(int(flags)), encoding="ascii")
    os.replace(tmp, path)


def load(run_dir: Path, vm_id: str, default: int = 0) -> int:
    """The flags stored for ``vm_id``; ``default`` (VIR_DOMAIN_NONE) when there are none.

    A file a script left unparsable raises ``ValueError`` naming the file.
    """
    path = _flags_file(run_dir, vm_id)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return default
    first = text.splitlines()[0].strip() if text.strip() else ""
    try:
        return int(first)
    except ValueError:
        raise ValueError(f"launch flags file {path} holds {first!r}, not an integer") from None


def remove(run_dir: Path, vm_id: str) -> None:
    """Forget the flags of ``vm_id`` (no error when there are none)."""
    try:
        _flags_file(run_dir, vm_id).unlink()
    except FileNotFoundError:
        pass
