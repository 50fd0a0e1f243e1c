"""Errors the client library raises.

:class:`RpcError` is the host's answer (a JSON-RPC error with VDSM's code and message); the
others are transport failures and derive from :class:`ConnectionError` (an ``OSError``), so
callers can tell "the host said no" from "we could not talk to the host".
"""

from __future__ import annotations


class RpcError(Exception):
    """The host answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"error {self.code}: {self.message}"


class ConnectionLost(ConnectionError):
    """The connection closed (or went silent) before the answer came."""


class StompError(ConnectionError):
    """The host sent a STOMP ERROR frame (it closes the connection after one)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail and detail != message else message)
        self.stomp_message = message
        self.detail = detail
