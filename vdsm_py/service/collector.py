"""The cyclic garbage collector, set for a daemon that holds many long-lived objects.

Why: CPython's collector walks every tracked object on each full (generation 2) pass. With
1000 VMs the daemon holds ~100,000 objects that live as long as their VM (state, metadata,
cached stats), a full pass over them takes 80-120 ms here, and the default thresholds start
one every few hundred VM creates or every few stats passes — on whatever thread allocated
last, the asyncio loop included, so every call in flight waits for it.

What this does instead: once the daemon has settled (started and recovered), what exists
is moved to the collector's permanent generation (``gc.freeze``), so full passes walk only
what changed since. Every ``interval`` seconds the permanent generation is thawed, collected
once and frozen again: cyclic garbage among once-frozen objects (a destroyed VM's, say) is
freed within one interval, and the frozen set follows the daemon's state as it grows.
Reference counting, which frees almost everything, is not affected at all.

Owns nothing else; process-wide, so the daemon (the composition root) is its only user.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("vdsm_py.service")


class CollectorSchedule:
    """Freeze what the settled daemon holds; thaw, collect and freeze again periodically.

    ``interval`` <= 0 leaves CPython's collector as it is (nothing is frozen).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def settle(self) -> None:
        """Freeze what exists now: the daemon's state. No pass runs (freezing only moves the
        collector's lists), so a daemon with 1000 VMs serves its first calls at once;
        garbage frozen with it is freed by the first :meth:`refreeze`."""
        if self.enabled:
            gc.freeze()

    def refreeze(self) -> int:
        """Thaw, collect and freeze again; returns how many unreachable objects were found."""
        started = time.monotonic()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        log.debug("collector: %d unreachable objects freed, %d frozen, in %.0f ms", found,
                  gc.get_freeze_count(), (time.monotonic() - started) * 1000)
        return found

    def start(self) -> None:
        """Settle now and refreeze every ``interval`` seconds until :meth:`stop`."""
        if not self.enabled or self._task is not None:
            return
        self.settle()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-refreeze")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.refreeze()

    def stop(self) -> None:
        """Stop refreezing and give the frozen objects back to the collector."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.enabled:
            gc.unfreeze()
