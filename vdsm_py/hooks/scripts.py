"""Finding the scripts of a hook point, safely and cheaply, and checksumming them.

Owns the rules for which files in ``<root>/<point>/`` are hook scripts:

- the directory is read on every call (admins drop scripts in at run time); a missing
  directory costs one failed ``open`` and yields nothing;
- names starting with ``.`` are ignored silently (as VDSM's ``glob('*')`` does), so editor
  and package-manager dot files never run;
- a script must be a regular file the daemon may execute, owned by root or by the daemon's
  user, and not writable by others (a world-writable script would let any local user run
  code as the daemon);
- a symbolic link is followed only when its target resolves inside the hooks root (one
  script installed at several points); a link leading anywhere else is skipped;
- everything else is skipped with a warning, logged once per file version so that a stray
  file does not flood the log on every call;
- scripts run in lexical order of their names.

Must not run anything: executing the scripts belongs to :mod:`vdsm_py.hooks.runner`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vdsm_py.hooks")

_CHECKSUM_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class HookScript:
    name: str
    """The file name in the hook point's directory (what logs and errors show)."""
    path: str
    """What to execute: the file itself, or the resolved target of a symbolic link."""
    identity: tuple[int, int, int, int]
    """(device, inode, size, mtime in ns) of the executed file: a cache key for checksums."""


class ScriptFinder:
    """Lists hook scripts under one root; remembers which skip warnings it already gave."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._warned: set[tuple[str, tuple[int, ...]]] = set()
        self._euid = os.geteuid()

    def scripts(self, point: str) -> list[HookScript]:
        """The runnable scripts of ``point`` in the order they run (maybe none)."""
        directory = os.path.join(self.root, point)
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            log.warning("cannot read hook directory %s: %s", directory, exc)
            return []
        if not entries:
            return []
        entries.sort(key=lambda e: e.name)
        found = []
        for entry in entries:
            script = self._check(entry)
            if script is not None:
                found.append(script)
        return found

    def points_present(self) -> list[str]:
        """Names of the directories directly under the root (hook points or not)."""
        try:
            with os.scandir(self.root) as it:
                return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            log.warning("cannot read hooks root %s: %s", self.root, exc)
            return []

    # --- one directory entry ------------------------------------------------------------

    def _check(self, entry: os.DirEntry[str]) -> HookScript | None:
        path = entry.path
        try:
            if entry.is_symlink():
                target = os.path.realpath(path)
                if not self._inside_root(target):
                    self._skip(path, None, f"symbolic link leads outside {self.root} ({target})")
                    return None
                path = target
            st = os.stat(path)
        except OSError as exc:
            self._skip(entry.path, None, f"cannot stat: {exc.strerror or exc}")
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if not stat.S_ISREG(st.st_mode):
            self._skip(entry.path, key, "not a regular file")
            return None
        if st.st_mode & stat.S_IWOTH:
            self._skip(entry.path, key, "writable by any user; refusing to run it")
            return None
        if st.st_uid not in (0, self._euid):
            self._skip(entry.path, key, f"owned by uid {st.st_uid}, not root or the daemon")
            return None
        if not os.access(path, os.X_OK):
            self._skip(entry.path, key, "not executable")
            return None
        return HookScript(entry.name, path, key)

    def _inside_root(self, target: str) -> bool:
        real_root = os.path.realpath(self.root)
        return target.startswith(real_root.rstrip("/") + "/")

    def _skip(self, path: str, key: tuple[int, ...] | None, why: str) -> None:
        marker = (path, key or ())
        if marker in self._warned:
            return
        if len(self._warned) > 4096:
            self._warned.clear()
        self._warned.add(marker)
        log.warning("skipping %s: %s", path, why)


class ChecksumCache:
    """SHA-256 of script files, recomputed only when a file's identity changes.

    VDSM reports ``sha256`` hex digests (older versions used MD5); an unreadable file gets
    an empty checksum, as in VDSM.
    """

    def __init__(self) -> None:
        self._digests: dict[tuple[str, tuple[int, int, int, int]], str] = {}

    def checksum(self, script: HookScript) -> str:
        key = (script.path, script.identity)
        digest = self._digests.get(key)
        if digest is None:
            digest = _sha256(script.path)
            if len(self._digests) > 4096:
                self._digests.clear()
            if digest:
                self._digests[key] = digest
        return digest


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHECKSUM_CHUNK):
                h.update(chunk)
    except OSError as exc:
        log.warning("cannot read hook script %s for its checksum: %s", path, exc)
        return ""
    return h.hexdigest()
