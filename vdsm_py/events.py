"""The daemon's internal event bus: domain code publishes, the transport delivers.

Domain code (virt, storage, network) calls :meth:`EventBus.publish` with a VDSM event name
such as ``|virt|VM_status|<vmId>`` and a params dict; it may do so from any thread (libvirt's
event thread, a worker). Subscribers (the STOMP server, tests, the CLI's local watchers) get
every event on the asyncio loop, in publish order. The bus adds VDSM's ``notify_time``
(monotonic milliseconds) so that clients can order events across connections.

This module must not import the transport: it is the seam between domain and wire.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vdsm_py.events")


@dataclass(frozen=True, slots=True)
class Event:
    """A notification as it goes on the wire: JSON-RPC method name and params."""

    method: str
    params: dict[str, Any]


Subscriber = Callable[[Event], None]


def notify_time() -> int:
    """VDSM's event timestamp: monotonic time in milliseconds."""
    return int(time.monotonic() * 1000)


class EventBus:
    """Fan-out of events to subscribers on one asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the loop events are delivered on (done once by the daemon at start)."""
        self._loop = loop

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns a function that unregisters it."""
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]

        return unsubscribe

    def publish(self, method: str, params: dict[str, Any]) -> None:
        """Publish an event; thread-safe. ``notify_time`` is added unless given."""
        params.setdefault("notify_time", notify_time())
        event = Event(method, params)
        loop = self._loop
        if loop is None or loop.is_closed():
            log.debug("no loop bound, event %s dropped", method)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, event.method)
