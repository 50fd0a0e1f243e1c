"""Record a guest's pty serial console (``<console type='pty'>``) into a file.

QEMU drops console output while nobody holds the pty open, so a recorder should start as
soon as the domain runs (the tiny guest needs seconds before it prints anything). The
recorded file is read with :func:`tests.integration.guest.wait_for_console`.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from pathlib import Path
from typing import Self


class PtyRecorder:
    """Copy everything the guest writes to ``pty_path`` into ``out`` until :meth:`close`."""

    def __init__(self, pty_path: str, out: Path) -> None:
        self.out = out
        self._fd = os.open(pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)  # no echo back into the guest, no line discipline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with open(self.out, "ab", buffering=0) as sink:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: QEMU closed its side (the guest stopped)
                    return
                if not data:
                    return
                sink.write(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
