"""Direct (O_DIRECT) reads that bypass the page cache, to see what storage really holds.

Must not write.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

BLOCK = 4096


def read_block(path: Path, size: int = BLOCK) -> bytes:
    """Read up to ``size`` bytes (a multiple of 4 KiB) from the start of ``path``."""
    buf = mmap.mmap(-1, size)  # page aligned, as O_DIRECT requires
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            n = os.preadv(fd, [buf], 0)
        finally:
            os.close(fd)
        return bytes(buf[:n])
    finally:
        buf.close()
