"""The domain monitor: each active domain's metadata is read periodically with O_DIRECT.

One asyncio task per domain; every read runs on the executor with a timeout, so a hung or
slow path never blocks the loop or another domain's checks. While a check of a domain is
still stuck in the kernel, no new check of that domain is started (a dead NFS server must
not eat the whole worker pool); its status turns invalid (379) and ``lastCheck`` keeps
growing. :meth:`DomainMonitor.repo_stats` answers from memory (it is ``Host.
getStorageRepoStats``, called often). Must not change storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import constants as sc
from storage.directio import read_block
from storage.metadata import parse_domain_metadata
from storage.sanlock_adapter import HostIdState
from vdsm_py.errors import CallTimeout, StorageDomainAccessError, VdsmError
from vdsm_py.executor import Executor

log = logging.getLogger("vdsm_py.storage.monitor")

HostIdProbe = Callable[[], HostIdState]


@dataclass
class DomainStatus:
    """Last result of one domain's checks (VDSM's repoStats entry)."""

    code: int = 0
    valid: bool = False
    delay: float = 0.0
    checked_at: float | None = None  # monotonic time of the last finished check
    version: int = -1
    acquired: bool = False
    host_id_state: str = HostIdState.FREE.value
    actual: bool = False  # at least one check finished
    error: str = ""


@dataclass
class _Watched:
    sd_uuid: str
    metadata_path: Path
    host_id: HostIdProbe | None
    status: DomainStatus = field(default_factory=DomainStatus)
    task: asyncio.Task[None] | None = None
    busy: threading.Event = field(default_factory=threading.Event)  # a check is running
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


def _check(path: Path, sd_uuid: str, probe: HostIdProbe | None,
           busy: threading.Event) -> tuple[float, int, HostIdState | None]:
    """Blocking: read and verify the metadata; return (read delay, version, host id state)."""
    try:
        start = time.monotonic()
        data = read_block(path)
        delay = time.monotonic() - start
        md = parse_domain_metadata(data, f"domain {sd_uuid}")
        state = probe() if probe is not None else None
        return delay, int(md.get(sc.DMDK_VERSION, "-1")), state
    finally:
        busy.clear()


class DomainMonitor:
    def __init__(
        self,
        executor: Executor,
        *,
        interval: float = 10.0,
        check_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.executor = executor
        self.interval = interval
        self.check_timeout = check_timeout
        self.clock = clock
        self._domains: dict[str, _Watched] = {}

    def start_monitoring(
        self, sd_uuid: str, metadata_path: Path, host_id: HostIdProbe | None = None
    ) -> None:
        if sd_uuid in self._domains:
            return
        watched = _Watched(sd_uuid, metadata_path, host_id)
        watched.task = asyncio.create_task(self._loop(watched), name=f"monitor/{sd_uuid}")
        self._domains[sd_uuid] = watched
        log.info("monitoring domain %s (%s)", sd_uuid, metadata_path)

    async def stop_monitoring(self, sd_uuid: str) -> None:
        watched = self._domains.pop(sd_uuid, None)
        if watched is None or watched.task is None:
            return
        watched.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watched.task
        log.info("stopped monitoring domain %s", sd_uuid)

    async def stop(self) -> None:
        for sd_uuid in list(self._domains):
            await self.stop_monitoring(sd_uuid)

    def monitored(self) -> list[str]:
        return sorted(self._domains)

    def status(self, sd_uuid: str) -> DomainStatus | None:
        watched = self._domains.get(sd_uuid)
        return watched.status if watched else None

    def refresh(self, sd_uuid: str) -> None:
        """Check ``sd_uuid`` now rather than at the next interval."""
        watched = self._domains.get(sd_uuid)
        if watched:
            watched.wakeup.set()

    def repo_stats(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        out = {}
        for sd_uuid, w in self._domains.items():
            st = w.status
            age = now - st.checked_at if st.checked_at is not None else now - 0.0
            out[sd_uuid] = {
                "code": st.code,
                "valid": st.valid,
                "delay": f"{st.delay:.6f}",
                "lastCheck": f"{age:.1f}" if st.checked_at is not None else "-1.0",
                "version": st.version,
                "acquired": st.acquired,
                "hostIdState": st.host_id_state,
                "actual": st.actual,
            }
        return out

    async def check_once(self, sd_uuid: str) -> DomainStatus:
        watched = self._domains[sd_uuid]
        await self._check(watched)
        return watched.status

    async def _loop(self, watched: _Watched) -> None:
        while True:
            await self._check(watched)
            watched.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watched.wakeup.wait(), self.interval)

    async def _check(self, w: _Watched) -> None:
        st = w.status
        if w.busy.is_set():
            st.valid, st.code = False, StorageDomainAccessError.code
            st.error = "previous check still blocked on storage"
            log.warning("domain %s: previous check still blocked on storage", w.sd_uuid)
            return
        w.busy.set()
        try:
            delay, version, state = await self.executor.run(
                _check, w.metadata_path, w.sd_uuid, w.host_id, w.busy,
                timeout=self.check_timeout, name=f"check {w.sd_uuid}",
            )
        except CallTimeout:
            st.valid, st.code, st.error = False, StorageDomainAccessError.code, "check timed out"
            log.error("domain %s: check timed out after %ss", w.sd_uuid, self.check_timeout)
            return  # busy stays set until the stuck read returns
        except VdsmError as exc:
            w.busy.clear()
            self._failed(w, exc.code, str(exc))
        except OSError as exc:
            w.busy.clear()
            self._failed(w, StorageDomainAccessError.code, f"{exc.strerror or exc}")
        else:
            st.valid, st.code, st.error, st.delay, st.version = True, 0, "", delay, version
            if state is not None:
                st.host_id_state = state.value
                st.acquired = state is HostIdState.ACQUIRED
        st.checked_at = self.clock()
        st.actual = True

    def _failed(self, w: _Watched, code: int, error: str) -> None:
        st = w.status
        if st.valid or st.error != error:
            log.warning("domain %s is invalid: %s", w.sd_uuid, error)
        st.valid, st.code, st.error = False, code, error
