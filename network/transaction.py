"""An undo log: each step that changes the host records how to reverse itself.

Owns the all-or-nothing rule of setupNetworks: :meth:`Transaction.step` runs one change
and, when it succeeds, remembers its undo; when any step fails, the caller calls
:meth:`rollback`, which runs the recorded undos newest first. A failed undo is logged and
the rest still run (leaving as little behind as possible); the failures are returned so the
error reported to the client can say the rollback was incomplete. Knows nothing of
networks or netlink: steps are plain callables.

With a :class:`~network.journal.Journal`, an undo that can describe itself (``to_wire()``)
is written there *before* its step runs, so that a start after a crash can undo a change
the dead process left half-done. Test-only hook: when the environment variable
``VDSM_PY_TEST_NET_STOP_AFTER`` is set, the process stops itself (SIGSTOP) right after the
first step whose ``"<item>: <what>"`` contains that text, so that a test can SIGKILL it at
a known point of a change.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from network.journal import Journal

log = logging.getLogger("vdsm_py.network")

STOP_AFTER_ENV = "VDSM_PY_TEST_NET_STOP_AFTER"


@dataclass(frozen=True)
class Undo:
    item: str  # the network, bond or device the step was for
    what: str
    fn: Callable[[], None]


class StepFailed(Exception):
    """A step failed; ``item`` and ``what`` say which, ``cause`` why."""

    def __init__(self, item: str, what: str, cause: BaseException) -> None:
        self.item = item
        self.what = what
        self.cause = cause
        super().__init__(f"{item}: {what}: {cause}")


@dataclass
class Transaction:
    undos: list[Undo] = field(default_factory=list)
    done: int = 0
    journal: Journal | None = None
    stop_after: str = field(default_factory=lambda: os.environ.get(STOP_AFTER_ENV, ""))

    def step(
        self, item: str, what: str, do: Callable[[], None], undo: Callable[[], None] | None
    ) -> None:
        """Run ``do``; on success record ``undo``; on failure raise :class:`StepFailed`."""
        to_wire = getattr(undo, "to_wire", None)
        if self.journal is not None and to_wire is not None:
            self.journal.record(item, what, to_wire())
        try:
            do()
        except Exception as exc:
            log.warning("network step failed: %s: %s: %s", item, what, exc)
            raise StepFailed(item, what, exc) from exc
        self.done += 1
        log.debug("network step done: %s: %s", item, what)
        if self.stop_after and self.stop_after in f"{item}: {what}":
            log.warning("test hook %s: stopping after %s: %s", STOP_AFTER_ENV, item, what)
            # Sent to this very thread, so that it stops before its next step (a signal
            # sent to the process may be taken by another thread, a step too late).
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        if undo is not None:
            self.undos.append(Undo(item, what, undo))

    def rollback(self) -> list[str]:
        """Undo every recorded step, newest first; return descriptions of failed undos."""
        failures = []
        while self.undos:
            undo = self.undos.pop()
            try:
                undo.fn()
            except Exception as exc:  # noqa: BLE001 - one failed undo must not stop the rest
                log.error("could not undo %s: %s: %s", undo.item, undo.what, exc)
                failures.append(f"{undo.item}: undo {undo.what}: {exc}")
        return failures
