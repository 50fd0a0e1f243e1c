"""The errors engine-lite reports to its users (CLI, control socket, tests).

Each carries a short machine-readable ``kind`` and a message meant for an admin. Host-side
failures (JSON-RPC errors, lost connections) are translated into these at the edge where
the engine talks to a host; nothing else in the engine catches transport exceptions.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class: ``kind`` names the category, ``str(err)`` is the admin's message."""

    kind = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.details}


class NotFound(EngineError):
    kind = "not_found"


class AlreadyExists(EngineError):
    kind = "already_exists"


class InvalidInput(EngineError):
    kind = "invalid_input"


class InvalidState(EngineError):
    """The object exists but cannot do that now (a VM already running, a host not Up...)."""

    kind = "invalid_state"


class NoHostAvailable(EngineError):
    """Scheduling found no host; ``details['filtered']`` maps each host to why it was refused."""

    kind = "no_host"


class HostUnreachable(EngineError):
    kind = "host_unreachable"


class EnrollmentError(EngineError):
    """Adding (or renewing) a host failed; nothing was left registered."""

    kind = "enrollment_failed"


class HostCallError(EngineError):
    """A host answered a verb with an error (``details['code']`` is VDSM's code)."""

    kind = "host_error"
