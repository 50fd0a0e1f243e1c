"""An undo log: each step that changes the host records how to reverse itself.

Owns the all-or-nothing rule of setupNetworks: :meth:`Transaction.step` runs one change
and, when it succeeds, remembers its undo; when any step fails, the caller calls
:meth:`rollback`, which runs the recorded undos newest first. A failed undo is logged and
the rest still run (leaving as little behind as possible); the failures are returned so the
error reported to the client can say the rollback was incomplete. Knows nothing of
networks or netlink: steps are plain callables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("vdsm_py.network")


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

    def step(
        self, item: str, what: str, do: Callable[[], None], undo: Callable[[], None] | None
    ) -> None:
        """Run ``do``; on success record ``undo``; on failure raise :class:`StepFailed`."""
        try:
            do()
        except Exception as exc:
            log.warning("network step failed: %s: %s: %s", item, what, exc)
            raise StepFailed(item, what, exc) from exc
        self.done += 1
        log.debug("network step done: %s: %s", item, what)
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
