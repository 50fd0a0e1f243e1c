"""Where the host's facts are read from: the roots of procfs, sysfs, /etc and /dev.

Owns only the :class:`HostPaths` value. Every reader in ``vdsm_py.host`` takes one, so that
tests can point a reader at a small tree of real files to pin an edge case (a missing DMI
file, an odd ``/proc/cpuinfo``) while production and most tests read the real machine.
Must not read anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostPaths:
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    etc: Path = Path("/etc")
    dev: Path = Path("/dev")

    @property
    def dmi(self) -> Path:
        return self.sys / "class" / "dmi" / "id"


def read_text(path: Path) -> str | None:
    """The stripped content of a small text file, or None when missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


DEFAULT_PATHS = HostPaths()
