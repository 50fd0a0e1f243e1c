"""A resource lease formatted by ``sanlock direct init`` into an open file, in a child.

``sanlock direct`` does the I/O in its own process, without the daemon (right for a lease
nobody can use yet), so the file it writes may be one the daemon could not open, e.g. an
unnamed ``O_TMPFILE`` one of ours, passed to the child and named ``/proc/self/fd/<fd>``. What
it writes is byte for byte what the daemon's ``write_resource`` writes (the same sanlock code
formats both; ``tests/integration/test_storage_sanlock.py`` compares them), opened the same
way (``O_DIRECT|O_SYNC``: durable once it exits). ``-a 0`` makes it write synchronously
rather than through an aio context, whose teardown at exit costs ~30 ms.

Blocking (:meth:`DirectInit.wait`): call from workers. Must not know domains or volumes.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

from vdsm_py.errors import ClusterLockInitError

log = logging.getLogger("vdsm_py.storage.sanlock")

SANLOCK_SBIN = "/usr/sbin/sanlock"
NICENESS = 10


@functools.cache
def sanlock_cli() -> str | None:
    """The sanlock program, or None if it is not installed."""
    found = shutil.which("sanlock")
    if found:
        return found
    return SANLOCK_SBIN if Path(SANLOCK_SBIN).exists() else None


class DirectInit:
    """``sanlock direct init`` of the resource ``name`` of ``lockspace`` at ``offset`` of
    the open file ``fd``, started (see the module docstring)."""

    def __init__(self, lockspace: str, name: str, fd: int, *, offset: int, align: int,
                 sector: int, timeout: float) -> None:
        program = sanlock_cli()
        if program is None:
            raise ClusterLockInitError("the sanlock program is not installed")
        resource = f"{lockspace}:{name}:/proc/self/fd/{fd}:{offset}"
        self.name, self.timeout = name, timeout
        self.argv = [program, "direct", "init", "-a", "0", "-r", resource,
                     "-Z", str(sector), "-A", f"{align >> 20}M"]
        log.debug("running %s", self.argv)
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         pass_fds=(fd,))
        except OSError as exc:
            raise ClusterLockInitError(f"cannot run sanlock: {exc.strerror}") from None
        try:  # it has time to spare (it writes ~1 MiB beside a longer qemu-img): yield the CPU
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, NICENESS)
        except OSError as exc:
            log.debug("cannot lower the priority of sanlock direct init: %s", exc)

    def wait(self) -> None:
        """Until the lease is written (durably); ClusterLockInitError if it was not."""
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ClusterLockInitError(f"sanlock direct init of lease {self.name} did not "
                                       f"finish within {self.timeout:g} s") from None
        if self.proc.returncode != 0:
            detail = out.decode(errors="replace").strip().replace("\n", " ")
            raise ClusterLockInitError(f"cannot format lease {self.name} (sanlock direct "
                                       f"init rc={self.proc.returncode}): {detail}")

    def kill(self) -> None:
        """Stop it if it still runs and collect it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
