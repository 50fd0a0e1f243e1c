"""One host's monitor: a persistent mTLS STOMP session, its events, its periodic polls.

Owns the connection to one host: connect (engine certificate, engine CA only, and the exact
certificate serial the engine issued), subscribe to events, read capabilities once, then
poll ``Host.getAllVmStats`` and ``Host.getStats`` at their intervals while forwarding
events; on any failure (connection lost, heart-beat missed, call timed out, garbage answer)
close the session, tell the sink, and reconnect with exponential backoff. It arms the grace
timer after which the host is NonResponsive. Must not change engine state itself: every
observation goes to the :class:`MonitorSink` (the engine), which owns the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from engine_lite.pki import serial_of
from vdsm_py.client import Client, RpcError

log = logging.getLogger("engine_lite.monitor")

METHOD_NOT_FOUND = -32601
# Polled verbs a host may lack (a host without VM or storage verbs): polling just stops.
OPTIONAL_POLLS = {"Host.getAllVmStats": "VM", "Host.getStorageRepoStats": "storage"}
VM_STATUS_PREFIX = "|virt|VM_status|"


class BadAnswer(Exception):
    """The host answered something the engine cannot use (or presented the wrong cert)."""


class MonitorSink(Protocol):
    async def host_connected(self, host_id: str) -> None: ...
    async def host_initialized(self, host_id: str, caps: dict[str, Any]) -> None: ...
    async def host_lost(self, host_id: str, reason: str) -> None: ...
    async def host_grace_expired(self, host_id: str) -> None: ...
    async def host_stats(self, host_id: str, stats: dict[str, Any]) -> None: ...
    async def host_storage(self, host_id: str, domains: list[str]) -> None: ...
    async def vm_stats(self, host_id: str, stats: list[dict[str, Any]],
                       sent_at: float) -> None: ...
    async def vm_event(self, host_id: str, vm_id: str, status: dict[str, Any]) -> None: ...


class HostMonitor:
    def __init__(
        self,
        host_id: str,
        name: str,
        address: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        expected_serials: Callable[[], set[str]],
        sink: MonitorSink,
        settings: Any,  # EngineConfig (duck-typed to keep this module free of config)
    ) -> None:
        self.host_id = host_id
        self.name = name
        self.address = address
        self.port = port
        self._ssl = ssl_context
        self._expected = expected_serials
        self._sink = sink
        self._cfg = settings
        self.client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._grace_task: asyncio.Future[None] | None = None  # the sink handling expiry
        self._initialized = False  # the current session reached Up (resets the backoff)
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"monitor {self.name}")

    async def stop(self) -> None:
        self._disarm()
        for task in (self._task, self._grace_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.client is not None:
            await self.client.close(timeout=1.0)
            self.client = None

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   timeout: float | None = None, flow_id: str | None = None) -> Any:
        """Call a verb on this host's session; ConnectionError when there is none."""
        client = self.client
        if client is None or not client.is_open:
            raise ConnectionError(f"no connection to host {self.name}")
        return await client.call(method, params or {},
                                 timeout=timeout or self._cfg.call_timeout, flow_id=flow_id)

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
                reason = "the session ended"
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, RpcError, BadAnswer, ValueError) as exc:
                reason = _describe(exc)
            had_session, self._initialized = self._initialized, False
            self.connected.clear()
            client, self.client = self.client, None
            if client is not None:
                await client.close(timeout=1.0)
            failures = 1 if had_session else failures + 1
            self._arm()
            await self._sink.host_lost(self.host_id, reason)
            delay = min(self._cfg.backoff_max, self._cfg.backoff_initial * 2 ** (failures - 1))
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))

    async def _session(self) -> None:
        hb = int(self._cfg.heartbeat_ms)
        client = await open_session(self.address, self.port, ssl_context=self._ssl,
                                    expected=self._expected(),
                                    timeout=self._cfg.connect_timeout, heartbeat=(hb, hb))
        self.client = client
        events = await client.subscribe_events(confirm=True, timeout=self._cfg.call_timeout)
        self._disarm()
        self.connected.set()
        await self._sink.host_connected(self.host_id)
        caps = await self.call("Host.getCapabilities")
        if not isinstance(caps, dict) or "memSize" not in caps:
            raise BadAnswer("Host.getCapabilities returned no memSize")
        await self._sink.host_initialized(self.host_id, caps)
        self._initialized = True
        workers = [
            self._poll("Host.getStats", self._cfg.host_stats_interval, self._on_host_stats),
            self._poll("Host.getAllVmStats", self._cfg.vm_stats_interval, self._on_vm_stats),
            self._poll("Host.getStorageRepoStats", self._cfg.host_stats_interval,
                       self._on_repo_stats),
            self._events(events),
        ]
        tasks = [asyncio.create_task(w) for w in workers]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise the failure that ended the session
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self, method: str, interval: float,
                    handle: Callable[[Any, float], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sent_at = loop.time()  # a report says nothing about changes seen after this
            try:
                result = await self.call(method)
            except RpcError as exc:
                if exc.code == METHOD_NOT_FOUND and method in OPTIONAL_POLLS:
                    log.info("host %s has no %s verbs; not polling %s", self.name,
                             OPTIONAL_POLLS[method], method)
                    await handle(None, sent_at)
                    return
                raise
            await handle(result, sent_at)
            await asyncio.sleep(interval)

    async def _on_host_stats(self, result: Any, sent_at: float) -> None:
        if not isinstance(result, dict):
            raise BadAnswer(f"Host.getStats returned {type(result).__name__}, not an object")
        await self._sink.host_stats(self.host_id, result)

    async def _on_vm_stats(self, result: Any, sent_at: float) -> None:
        if result is None:  # the host has no VM verbs
            return
        if not isinstance(result, list) or \
                not all(isinstance(v, dict) and isinstance(v.get("vmId"), str) for v in result):
            raise BadAnswer("Host.getAllVmStats did not return a list of VM stats")
        await self._sink.vm_stats(self.host_id, result, sent_at)

    async def _on_repo_stats(self, result: Any, sent_at: float) -> None:
        """The storage domains the host sees, active and valid (none without storage)."""
        if result is None:
            result = {}
        if not isinstance(result, dict) or \
                not all(isinstance(v, dict) for v in result.values()):
            raise BadAnswer("Host.getStorageRepoStats did not return stats by domain")
        await self._sink.host_storage(self.host_id, sorted(
            sd for sd, stats in result.items() if stats.get("valid") is True))

    async def _events(self, events: Any) -> None:
        async for method, params in events:
            if not method.startswith(VM_STATUS_PREFIX) or not isinstance(params, dict):
                continue
            vm_id = method[len(VM_STATUS_PREFIX):]
            status = params.get(vm_id)
            if isinstance(status, dict):
                await self._sink.vm_event(self.host_id, vm_id, status)
        raise ConnectionError("the event subscription ended")

    # -- grace period -------------------------------------------------------------------

    def _arm(self) -> None:
        if self._grace is None:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self._cfg.nonresponsive_after, self._grace_expired)

    def _disarm(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _grace_expired(self) -> None:
        self._grace = None
        task = asyncio.ensure_future(self._sink.host_grace_expired(self.host_id))
        task.add_done_callback(_log_failure)
        self._grace_task = task


async def open_session(address: str, port: int, *, ssl_context: ssl.SSLContext,
                       expected: set[str], timeout: float,
                       heartbeat: tuple[int, int] = (0, 0)) -> Client:
    """A session with a host that presents the very certificate the engine issued it (one
    of ``expected`` serials; any engine-signed one if empty); :class:`BadAnswer` if not."""
    client = await Client.connect(address, port, ssl_context=ssl_context, timeout=timeout,
                                  heartbeat=heartbeat)
    try:
        _check_identity(client, expected)
    except BadAnswer:
        await client.close(timeout=1.0)
        raise
    return client


def _check_identity(client: Client, expected: set[str]) -> None:
    transport = getattr(client, "_transport", None)  # TODO(client): public accessor
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        raise BadAnswer("the host presented no certificate")
    serial = serial_of(der)
    if expected and serial not in expected:
        raise BadAnswer(f"the host presented certificate serial {serial}, not the one the "
                        "engine issued to it; refusing it")


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("grace handler failed", exc_info=task.exception())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not signed by the engine CA ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {exc.reason or exc}"
    if isinstance(exc, RpcError):
        return f"host error {exc.code}: {exc.message}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
