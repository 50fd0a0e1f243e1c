"""The setupNetworks hook points: ``before_network_setup``, ``after_network_setup`` and
``after_network_setup_fail``, with VDSM's JSON document.

Owns the shape the scripts see and what is taken back from them. The document (in the
file named by ``_hook_json``) is ``{"request": {"networks": ..., "bondings": ...,
"options": ...}}`` in the wire spelling of ``Host.setupNetworks``. ``before_network_setup``
may rewrite any of the three; what it leaves is what the agent validates and applies, and
a failing script refuses the call with ``HookError`` (1500) before anything is read or
touched. The ``after_*`` points get the request as applied (or, on failure, as it was
when it failed); their errors are only logged. A point without scripts costs one
directory lookup. Runs on the asyncio loop (the runner uses asyncio child processes);
must not touch the kernel or the agent's configuration.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vdsm_py.errors import HookError
from vdsm_py.hooks import HookRunner

log = logging.getLogger("vdsm_py.network")

BEFORE = "before_network_setup"
AFTER = "after_network_setup"
AFTER_FAIL = "after_network_setup_fail"


@dataclass(frozen=True)
class WireRequest:
    """A setupNetworks request as the client sent it (or as a hook rewrote it)."""

    networks: Mapping[str, Any]
    bondings: Mapping[str, Any]
    options: Mapping[str, Any]

    def document(self) -> dict[str, Any]:
        return {"request": {"networks": dict(self.networks), "bondings": dict(self.bondings),
                            "options": dict(self.options)}}

    @classmethod
    def from_document(cls, doc: Any) -> WireRequest:
        request = doc.get("request") if isinstance(doc, dict) else None
        if not isinstance(request, dict):
            raise HookError(f"{BEFORE} hook left no 'request' object in its JSON document")
        parts = []
        for key in ("networks", "bondings", "options"):
            value = request.get(key, {})
            if not isinstance(value, dict):
                raise HookError(f"{BEFORE} hook left 'request.{key}' that is not an object")
            parts.append(value)
        return cls(*parts)


class NetworkHooks:
    """Runs the network hook points through the daemon's :class:`HookRunner` (or nothing,
    without one: in-process tests and ``vdsm-tool restore-nets``)."""

    def __init__(self, runner: HookRunner | None) -> None:
        self.runner = runner

    async def before(self, request: WireRequest) -> WireRequest:
        """The request as ``before_network_setup`` left it; HookError if a script failed."""
        if self.runner is None or not self.runner.has_scripts(BEFORE):
            return request
        # Deep copy: the scripts' view must not alias the caller's dictionaries.
        out = await self.runner.run_json(BEFORE, copy.deepcopy(request.document()))
        rewritten = WireRequest.from_document(out)
        if rewritten != request:
            log.info("%s hooks rewrote the request: networks %s, bondings %s", BEFORE,
                     sorted(rewritten.networks), sorted(rewritten.bondings))
        return rewritten

    async def after(self, request: WireRequest, *, failed: bool) -> None:
        """``after_network_setup`` (or ``after_network_setup_fail``); errors are logged."""
        point = AFTER_FAIL if failed else AFTER
        if self.runner is None or not self.runner.has_scripts(point):
            return
        try:
            await self.runner.run_json(point, request.document(), raise_on_error=False)
        except HookError as exc:  # a chain that left bad JSON; nothing to undo at after_*
            log.error("%s: %s", point, exc)
