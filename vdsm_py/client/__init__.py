"""Client library of the vdsm_py JSON-RPC API (also speaks to oVirt VDSM).

- :class:`Client` — asyncio; ``await Client.connect(host, port, ssl_context=...)``.
- :class:`SyncClient` — the same calls, blocking (the CLI uses it).
- :class:`RpcError` — the host answered with an error (``code``, ``message``); transport
  failures are ``OSError``s: :class:`ConnectionLost`, :class:`StompError`, ``TimeoutError``.
- :mod:`vdsm_py.client.raw` — a raw STOMP connection for tests.
"""

from vdsm_py.client.aio import Client, EventStream
from vdsm_py.client.errors import ConnectionLost, RpcError, StompError
from vdsm_py.client.sync import SyncClient

__all__ = ["Client", "ConnectionLost", "EventStream", "RpcError", "StompError", "SyncClient"]
