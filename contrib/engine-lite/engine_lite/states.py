"""The host state machine: which status follows which, on what. Pure; no I/O, no clock.

Installing → Initializing (first mTLS session with the engine's certificate) → Up (first
capabilities and stats read); Up/Initializing → Connecting when the connection is lost, a
heart-beat is missed or the host answers garbage; Connecting → NonResponsive when the grace
period ends without a good session; any of them → Initializing on reconnection. When the
engine starts, a host it last saw Up or Initializing is Connecting: that status described a
session of the engine's previous life, and nothing may be sent to the host before a new one
is up. An Installing host stays Installing through failures (it has not joined yet). Maintenance is an
admin flag on top of these (:attr:`engine_lite.models.Host.effective_status`).
"""

from __future__ import annotations

import enum

from engine_lite.models import HostStatus as S


class Trigger(enum.StrEnum):
    CONNECTED = "connected"
    INITIALIZED = "initialized"
    LOST = "lost"
    GRACE_EXPIRED = "grace_expired"
    ENGINE_STARTED = "engine_started"


_TABLE: dict[tuple[S, Trigger], S] = {
    (S.INSTALLING, Trigger.CONNECTED): S.INITIALIZING,
    (S.CONNECTING, Trigger.CONNECTED): S.INITIALIZING,
    (S.NON_RESPONSIVE, Trigger.CONNECTED): S.INITIALIZING,
    (S.INITIALIZING, Trigger.INITIALIZED): S.UP,
    (S.INITIALIZING, Trigger.LOST): S.CONNECTING,
    (S.UP, Trigger.LOST): S.CONNECTING,
    (S.CONNECTING, Trigger.GRACE_EXPIRED): S.NON_RESPONSIVE,
    (S.UP, Trigger.ENGINE_STARTED): S.CONNECTING,
    (S.INITIALIZING, Trigger.ENGINE_STARTED): S.CONNECTING,
}


def next_status(current: S, trigger: Trigger) -> S | None:
    """The status after ``trigger``, or None when the trigger changes nothing."""
    return _TABLE.get((current, trigger))
