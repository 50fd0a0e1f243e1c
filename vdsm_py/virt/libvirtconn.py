"""The libvirt adapter: one connection per URI, every call on the worker pool, events in.

Owns:

- libvirt's event loop: the default implementation, registered once per process before
  any connection is opened (the test driver only emits events on connections opened after
  that) and run by one daemon thread;
- the connection: opened through the :class:`~vdsm_py.executor.Executor` (so a hung
  libvirtd never blocks the asyncio loop), watched with a close callback and reopened with
  back-off when libvirtd goes away; the listener is told so it can resynchronise;
- every call: :meth:`LibvirtConnection.call` / :meth:`call_domain` run a function with the
  ``virConnect`` (or the domain looked up by UUID) on a worker under the libvirt timeout;
- domain events (lifecycle, reboot, guest agent, console clients) handed from libvirt's thread to the
  asyncio loop, to a :class:`EventListener`.

It knows nothing of VMs, statuses or the wire. Errors stay :class:`libvirt.libvirtError`;
callers decide what they mean.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import libvirt

from vdsm_py.errors import VdsmError
from vdsm_py.executor import Executor

log = logging.getLogger("vdsm_py.virt.libvirt")

T = TypeVar("T")

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None


def _log_libvirt_error(_ctx: Any, err: Any) -> None:
    # libvirt's default handler prints every error to stderr; callers get the exception.
    log.debug("libvirt: %s", err[2] if isinstance(err, (list, tuple)) and len(err) > 2 else err)


def _run_events() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:
            log.exception("libvirt event loop iteration failed")


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and start its thread (once per process)."""
    global _event_thread
    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.registerErrorHandler(_log_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _event_thread = threading.Thread(target=_run_events, name="libvirt-events", daemon=True)
        _event_thread.start()


def error_code(exc: BaseException) -> int | None:
    return exc.get_error_code() if isinstance(exc, libvirt.libvirtError) else None


def is_no_domain(exc: BaseException) -> bool:
    return error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN


def is_unsupported(exc: BaseException) -> bool:
    return error_code(exc) in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED)


def message(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


class EventListener(Protocol):
    """Receives domain events on the asyncio loop."""

    def on_lifecycle(self, vm_id: str, event: int, detail: int) -> None: ...

    def on_reboot(self, vm_id: str) -> None: ...

    def on_agent(self, vm_id: str, connected: bool) -> None: ...

    def on_device_removed(self, vm_id: str, alias: str) -> None: ...

    def on_graphics(self, vm_id: str, phase: int, client_ip: str, client_port: str) -> None: ...

    def on_reconnected(self) -> None: ...


class LibvirtConnection:
    """A self-healing connection to ``uri``; all blocking work goes through ``executor``."""

    def __init__(
        self,
        uri: str,
        executor: Executor,
        *,
        timeout: float = 30.0,
        open_fn: Callable[[str], libvirt.virConnect] = libvirt.open,
        reconnect_delays: tuple[float, ...] = (0.5, 1, 2, 5, 10),
    ) -> None:
        self.uri = uri
        self.executor = executor
        self.timeout = timeout
        self._open_fn = open_fn
        self._delays = reconnect_delays
        self._conn: libvirt.virConnect | None = None
        self._listener: EventListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback_ids: list[int] = []
        self._opening: asyncio.Lock | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------

    async def open(self, listener: EventListener | None = None) -> None:
        """Connect (events go to ``listener``). Raises libvirtError when libvirt says no."""
        self._listener = listener or self._listener
        self._loop = asyncio.get_running_loop()
        self._closed = False
        await self._connect()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        ids, self._callback_ids = self._callback_ids, []

        def _close() -> None:
            for cid in ids:
                try:
                    conn.domainEventDeregisterAny(cid)
                except libvirt.libvirtError as exc:
                    log.debug("deregistering event callback %d: %s", cid, exc)
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError as exc:
                log.debug("unregistering close callback: %s", exc)
            conn.close()

        try:
            await self.executor.run(_close, timeout=self.timeout, name="libvirt.close")
        except (libvirt.libvirtError, VdsmError) as exc:
            log.warning("closing libvirt connection %s: %s", self.uri, exc)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def _connect(self) -> libvirt.virConnect:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._conn is not None:
                return self._conn
            ensure_event_loop()
            conn = await self.executor.run(
                self._open_and_register, timeout=self.timeout, name="libvirt.open"
            )
            self._conn = conn
            log.info("connected to libvirt at %s", self.uri)
            return conn

    def _open_and_register(self) -> libvirt.virConnect:
        """Worker side of :meth:`_connect`: open, then register the callbacks."""
        conn = self._open_fn(self.uri)
        if conn is None:
            raise libvirt.libvirtError(f"cannot connect to {self.uri}")
        try:
            conn.registerCloseCallback(self._closed_cb, None)
        except libvirt.libvirtError as exc:
            log.debug("close callback not supported by %s: %s", self.uri, exc)
        ids = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb, None),
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot_cb, None),
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._removed_cb, None),
        ]
        for event_id, callback, what in (
                (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._agent_cb, "agent lifecycle"),
                (libvirt.VIR_DOMAIN_EVENT_ID_GRAPHICS, self._graphics_cb, "graphics")):
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, callback, None))
            except libvirt.libvirtError as exc:
                log.debug("%s events not supported by %s: %s", what, self.uri, exc)
        self._callback_ids = ids
        return conn

    # -- calls --------------------------------------------------------------------------

    async def call(
        self, fn: Callable[[libvirt.virConnect], T], *, name: str, timeout: float | None = None
    ) -> T:
        """``fn(virConnect)`` on a worker, under the libvirt timeout."""
        conn = self._conn or await self._connect()
        return await self.executor.run(
            fn, conn, timeout=self.timeout if timeout is None else timeout, name=name
        )

    async def call_domain(
        self, vm_id: str, fn: Callable[[libvirt.virDomain], T], *, name: str,
        timeout: float | None = None,
    ) -> T:
        """``fn(domain)`` for the domain with UUID ``vm_id`` (looked up in the same call)."""

        def run(conn: libvirt.virConnect) -> T:
            return fn(conn.lookupByUUIDString(vm_id))

        return await self.call(run, name=name, timeout=timeout)

    # -- events (libvirt's thread) ---------------------------------------------------------

    def _post(self, method: str, *args: Any) -> None:
        loop, listener = self._loop, self._listener
        if loop is None or listener is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(getattr(listener, method), *args)
        except RuntimeError:  # loop closed meanwhile
            log.debug("event %s dropped: loop closed", method)

    def _lifecycle_cb(self, _conn: Any, dom: libvirt.virDomain, event: int, detail: int,
                      _opaque: Any) -> None:
        self._post("on_lifecycle", dom.UUIDString(), event, detail)

    def _reboot_cb(self, _conn: Any, dom: libvirt.virDomain, _opaque: Any) -> None:
        self._post("on_reboot", dom.UUIDString())

    def _removed_cb(self, _conn: Any, dom: libvirt.virDomain, alias: str,
                    _opaque: Any) -> None:
        self._post("on_device_removed", dom.UUIDString(), alias)

    def _agent_cb(self, _conn: Any, dom: libvirt.virDomain, state: int, _reason: int,
                  _opaque: Any) -> None:
        connected = state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
        self._post("on_agent", dom.UUIDString(), connected)

    def _graphics_cb(self, _conn: Any, dom: libvirt.virDomain, phase: int, _local: Any,
                     remote: Any, _scheme: Any, _subject: Any, _opaque: Any) -> None:
        remote = remote if isinstance(remote, dict) else {}
        self._post("on_graphics", dom.UUIDString(), phase, str(remote.get("node", "")),
                   str(remote.get("service", "")))

    def _closed_cb(self, _conn: Any, reason: int, _opaque: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_closed, reason)

    # -- reconnection (loop) ----------------------------------------------------------------

    def _on_closed(self, reason: int) -> None:
        if self._closed:
            return
        log.warning("libvirt connection %s closed (reason %d); reconnecting", self.uri, reason)
        self._conn = None
        self._callback_ids = []
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.create_task(self._reconnect(), name="libvirt-reconnect")

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self._connect()
            except (libvirt.libvirtError, VdsmError) as exc:
                delay = self._delays[min(attempt, len(self._delays) - 1)]
                attempt += 1
                log.warning("reconnecting to %s failed (%s); retrying in %gs",
                            self.uri, message(exc), delay)
                await asyncio.sleep(delay)
                continue
            if self._listener is not None:
                self._listener.on_reconnected()
            return
