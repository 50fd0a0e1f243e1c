"""Proof that a client can still reach the host after a network change.

Owns matching RPC activity to the client that asked for a change: the daemon reports every
call (``on_activity``, fed by the dispatcher with each call's context); a pending check is
satisfied by a call that arrives after the change was applied from the same connection or
from the same peer address (an engine that lost its connection reconnects from a new port).
Without a known requester any client counts, as in VDSM. Runs on the asyncio loop only;
must not import the RPC layer (the context is read by attribute).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vdsm_py.network")


def peer_host(peer: str) -> str:
    """``'10.0.0.1:4242'`` → ``'10.0.0.1'``; ``'[::1]:4242'`` → ``'::1'``."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return host.strip("[]")


@dataclass(frozen=True)
class Requester:
    """Who asked for a change: the connection id and peer of its call."""

    client_id: str = ""
    peer: str = ""

    @classmethod
    def from_context(cls, ctx: Any) -> Requester | None:
        if ctx is None:
            return None
        return cls(getattr(ctx, "client_id", "") or "", getattr(ctx, "peer", "") or "")

    def matches(self, ctx: Any) -> bool:
        client_id = getattr(ctx, "client_id", "")
        if self.client_id and client_id == self.client_id:
            return True
        host = peer_host(self.peer) if self.peer else ""
        return bool(host) and peer_host(getattr(ctx, "peer", "") or "") == host


class ConnectivityWatch:
    def __init__(self) -> None:
        self._pending: list[tuple[Requester | None, asyncio.Event]] = []

    def on_activity(self, ctx: Any) -> None:
        """The dispatcher's activity callback: called on the loop for every call."""
        for requester, seen in self._pending:
            if requester is None or requester.matches(ctx):
                seen.set()

    async def wait(self, requester: Requester | None, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a call from ``requester``; True when one came."""
        seen = asyncio.Event()
        entry = (requester, seen)
        self._pending.append(entry)
        try:
            await asyncio.wait_for(seen.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._pending.remove(entry)
