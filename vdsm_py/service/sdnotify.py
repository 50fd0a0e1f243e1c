"""systemd integration: READY/STATUS/STOPPING notifications and watchdog pings.

Uses systemd-python's ``systemd.daemon.notify``, which does nothing when ``NOTIFY_SOCKET`` is
unset (not run by systemd), so callers never need to ask whether they run under systemd.
The watchdog is pinged from the asyncio loop itself: if the loop freezes, the pings stop and
systemd restarts the daemon, which is exactly the point.
"""

from __future__ import annotations

import asyncio
import logging
import os

from systemd import daemon as sd_daemon  # type: ignore[attr-defined]

log = logging.getLogger("vdsm_py.service")


def notify(*assignments: str) -> None:
    """Send ``KEY=value`` assignments to systemd (no-op outside systemd)."""
    if os.environ.get("NOTIFY_SOCKET"):
        sd_daemon.notify("\n".join(assignments))


def ready(status: str) -> None:
    notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def status(text: str) -> None:
    notify(f"STATUS={text}")


def stopping(text: str = "Stopping") -> None:
    notify("STOPPING=1", f"STATUS={text}")


def watchdog_interval() -> float | None:
    """Seconds between pings: half of WATCHDOG_USEC, when systemd asks for pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 1e6 / 2, 0.1)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None


async def watchdog_loop(interval: float) -> None:
    """Ping the systemd watchdog every ``interval`` seconds until cancelled."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
