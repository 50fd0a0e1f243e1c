"""The tiny STOMP broker inside the server: who subscribed to what, and MESSAGE delivery.

Owns: the subscription registry shared by all connections (as in VDSM, a reply-to or event
destination reaches every subscription of it, whatever connection made it), the encoding of
MESSAGE frames (a pre-encoded header prefix per subscription, so a response costs one join)
and message ids.

Must not: parse frames, run requests or decide when a connection closes. It talks to
connections only through :class:`Subscriber` (``send_bytes``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from vdsm_py.transport.stomp import escape

log = logging.getLogger("vdsm_py.transport")

EVENTS_DESTINATION = "jms.queue.events"
REQUEST_DESTINATIONS = ("jms.topic.vdsm_requests", "jms.topic.vdsm_irs_requests")
# Where responses go when a request carries no reply-to (VDSM's legacy response topic).
DEFAULT_RESPONSE_DESTINATION = "jms.topic.vdsm_responses"
JSON = "application/json"


class Subscriber(Protocol):
    """What the broker needs from a connection."""

    name: str

    def send_bytes(self, data: bytes) -> None: ...


@dataclass(eq=False, slots=True)
class Subscription:
    conn: Subscriber
    destination: str
    id: str
    ack: str = "auto"
    _prefix: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._prefix = (
            f"MESSAGE\ndestination:{escape(self.destination)}\nsubscription:{escape(self.id)}\n"
        ).encode()

    def message(self, message_id: int, body: bytes, content_type: str = JSON) -> bytes:
        """A MESSAGE frame carrying ``body`` for this subscription."""
        return b"".join(
            (
                self._prefix,
                b"content-type:%s\nmessage-id:%d\ncontent-length:%d\n\n"
                % (content_type.encode(), message_id, len(body)),
                body,
                b"\0",
            )
        )


def is_request_destination(destination: str) -> bool:
    """Destinations answered by the RPC server (and their dotted sub-destinations)."""
    for queue in REQUEST_DESTINATIONS:
        if destination == queue or destination.startswith(queue + "."):
            return True
    return False


class Broker:
    """Subscriptions by destination, and delivery to them."""

    def __init__(self) -> None:
        self._by_destination: dict[str, list[Subscription]] = {}
        self._message_ids = itertools.count(1)
        self.count = 0

    def add(self, subscription: Subscription) -> None:
        self._by_destination.setdefault(subscription.destination, []).append(subscription)
        self.count += 1

    def remove(self, subscription: Subscription) -> None:
        subs = self._by_destination.get(subscription.destination)
        if not subs or subscription not in subs:
            return
        if len(subs) == 1:
            del self._by_destination[subscription.destination]
        else:
            subs.remove(subscription)
        self.count -= 1

    def remove_all(self, subscriptions: Iterable[Subscription]) -> None:
        for subscription in subscriptions:
            self.remove(subscription)

    def has_subscribers(self, destination: str) -> bool:
        return destination in self._by_destination

    def deliver(self, destination: str, body: bytes, content_type: str = JSON) -> int:
        """Send ``body`` to every subscription of exactly ``destination``; return how many."""
        subs = self._by_destination.get(destination)
        if not subs:
            return 0
        # A copy: a failing write may close a connection and so change the list.
        for sub in tuple(subs):
            sub.conn.send_bytes(sub.message(next(self._message_ids), body, content_type))
        return len(subs)

    def matching(self, destination: str) -> list[Subscription]:
        """Subscriptions of ``destination`` or of a dotted parent of it (``a.b`` for
        ``a.b.c``), as VDSM matches forwarded SENDs."""
        found: list[Subscription] = []
        parts = destination.split(".")
        for n in range(1, len(parts) + 1):
            found.extend(self._by_destination.get(".".join(parts[:n]), ()))
        return found

    def forward(self, destination: str, headers: dict[str, str], body: bytes) -> int:
        """Pass a client's SEND on, as MESSAGE, to the matching subscriptions."""
        subs = self.matching(destination)
        for sub in subs:
            lines = [
                "MESSAGE",
                f"subscription:{escape(sub.id)}",
                f"message-id:{next(self._message_ids)}",
            ]
            for name, value in headers.items():
                if name not in ("subscription", "message-id", "content-length", "receipt"):
                    lines.append(f"{escape(name)}:{escape(value)}")
            lines.append(f"content-length:{len(body)}\n\n")
            sub.conn.send_bytes("\n".join(lines).encode("utf-8") + body + b"\0")
        return len(subs)
