"""Per-namespace sysctls (``/proc/sys/net``) of the network domain.

``/proc/sys/net`` shows the network namespace of the *thread* that opens it, so a value of
another namespace is read or written on a short-lived thread that has entered that
namespace with ``setns(2)`` (which changes only the calling thread). Owns nothing else;
used by :class:`network.netlink.Netlink` for the IPv6 autoconfiguration switches. Never
runs ``sysctl``, ``ip`` or any other program.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")


def _netns_fd(netns: str) -> int:
    return os.open(NETNS_RUN_DIR / netns, os.O_RDONLY)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` on a short-lived thread that has entered ``netns`` (for /proc/sys/net,
    which shows the network namespace of the thread that opens it)."""
    if not netns:
        return fn()
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = _netns_fd(netns)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            error.append(exc)

    # setns() changes only this thread, which ends here: no other thread is affected.
    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
