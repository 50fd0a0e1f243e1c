"""The stream of events a client subscribed to (``jms.queue.events``).

Owns: a bounded queue of decoded notifications (the oldest are dropped, with a warning, if
the consumer falls :data:`EVENT_QUEUE_SIZE` behind) and the end of the stream (an error when
the connection died, a clean stop when the client closed).

Must not: do I/O; the :class:`~vdsm_py.client.aio.Client` feeds it and unsubscribes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from vdsm_py.client.aio import Client

log = logging.getLogger("vdsm_py.client")

EVENT_QUEUE_SIZE = 10000
_END = object()


class EventStream:
    """Events of one subscription to ``jms.queue.events``: ``async for method, params in``.

    Raises :class:`ConnectionLost` (or :class:`StompError`) when the connection ends under
    it; stops when the client is closed or :meth:`close` is called.
    """

    def __init__(self, client: Client, sub_id: str) -> None:
        self._client = client
        self.sub_id = sub_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ended = False
        self.dropped = 0

    def _put(self, body: bytes) -> None:
        try:
            message = orjson.loads(body)
            item = (message["method"], message.get("params", {}))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring malformed event %r", body[:200])
            return
        if self._queue.qsize() >= EVENT_QUEUE_SIZE:
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event consumer too slow: %d events dropped", self.dropped)
        self._queue.put_nowait(item)

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(error if error is not None else _END)

    def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)
            raise item
        return item  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Unsubscribe; iteration stops."""
        self._client._unsubscribe(self.sub_id)
        self._end(None)
