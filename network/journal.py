"""The undo journal of the network change in progress, for recovery after a crash.

Owns ``<state_dir>/network/journal.jsonl``: while a change runs, one JSON line per step
holding the step's undo (an operation name and JSON arguments), appended *before* the step
runs. The file is removed once the change is over (saved as the running configuration, or
rolled back). If it exists at start-up, the agent died part-way through a change: the
recorded undos, run newest first, bring the kernel back to the running configuration the
change started from (an undo of a step that never ran fails harmlessly and is logged).
Lines are written unbuffered but not fsynced: a killed process loses nothing the kernel
has; after a power loss the kernel's state is gone as well. Must not touch the kernel.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vdsm_py.network")


@dataclass(frozen=True)
class Entry:
    item: str
    what: str
    op: dict[str, Any]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def begin(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                           0o600)

    def record(self, item: str, what: str, op: dict[str, Any]) -> None:
        if self._fd is None:
            self.begin()
        assert self._fd is not None
        line = json.dumps({"item": item, "what": what, "op": op}, separators=(",", ":"))
        os.write(self._fd, line.encode() + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def clear(self) -> None:
        """The change is over: nothing to recover."""
        self.close()
        self.path.unlink(missing_ok=True)

    def pending(self) -> list[Entry]:
        """The undos of an interrupted change, oldest first ([] when there was none)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                log.warning("ignoring a torn journal line: %r", line[:200])
                continue  # the last line may be torn by the crash
            out.append(Entry(data["item"], data["what"], data["op"]))
        return out
