"""Blocking wrapper of :class:`~vdsm_py.client.aio.Client` for scripts and the CLI.

Owns: a private event loop running in a daemon thread, and forwarding each call to it.
Errors are the asyncio client's (``OSError`` family for transport problems, ``RpcError`` for
the host's answers), raised in the calling thread.

Must not: be used from inside a running event loop's thread for its blocking calls (use the
asyncio client there).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Self, TypeVar

from vdsm_py.client.aio import Client, EventStream
from vdsm_py.client.errors import ConnectionLost

T = TypeVar("T")


class SyncClient:
    """``SyncClient().connect(host, port, ssl_context=...)``, then ``call``/``events``/``close``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None

    def connect(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        timeout: float = 30.0,
        heartbeat: tuple[int, int] = (0, 24000),
    ) -> SyncClient:
        if self._client is not None:
            raise RuntimeError("already connected")
        self._start_loop()
        self._client = self._run(
            Client.connect(
                host, port, ssl_context=ssl_context, timeout=timeout, heartbeat=heartbeat
            )
        )
        return self

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = 60.0,
        flow_id: str | None = None,
    ) -> Any:
        return self._run(self._connected().call(method, params, timeout=timeout, flow_id=flow_id))

    def events(self) -> Iterator[tuple[str, Any]]:
        """Subscribe to events and yield ``(method, params)`` as they arrive."""
        client = self._connected()
        stream: EventStream = self._run(client.subscribe_events())
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if client.is_open and self._loop is not None and self._loop.is_running():
                self._run(stream.close())

    def close(self) -> None:
        """Disconnect and stop the loop thread; safe to call more than once, or unconnected."""
        loop, thread, client = self._loop, self._thread, self._client
        self._client = None
        if loop is None:
            return
        try:
            if client is not None and loop.is_running():
                self._run(client.close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(10)
            if not loop.is_running():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="vdsm-client-loop", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def _connected(self) -> Client:
        if self._client is None:
            raise ConnectionLost("not connected")
        return self._client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise
