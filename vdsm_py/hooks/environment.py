"""The environment a hook script runs with.

Owns which variables a script sees: the daemon's environment, then the call's extra
variables (a device's custom properties), then the VM's custom properties (these win, as in
VDSM), then the daemon's contract variables, which nothing can override: ``vmId``,
``PYTHONPATH`` (the ``hooking`` module first), ``_hook_run_dir`` and the document's file in
``_hook_domxml`` or ``_hook_json``.

Custom properties come from the engine's users; a few variables that would change how every
script or its interpreter behaves (``PATH``, ``LD_PRELOAD``, ``PYTHONPATH``...) are never
taken from them. Refused items are logged, never silently dropped.

Must not run anything or touch files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vdsm_py.hooks import launchflags

log = logging.getLogger("vdsm_py.hooks")

DOMXML_VAR = "_hook_domxml"
JSON_VAR = "_hook_json"

PROTECTED_VARIABLES = frozenset(
    {
        DOMXML_VAR,
        JSON_VAR,
        launchflags.RUN_DIR_ENV,
        "vmId",
        "PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "BASH_ENV",
        "ENV",
        "IFS",
        "SHELLOPTS",
    }
)


def script_environment(
    *,
    data_var: str,
    data_path: str,
    vm_id: str | None,
    custom: Mapping[str, Any],
    extra: Mapping[str, Any],
    hooking_path: Path,
    run_dir: Path | None,
    point: str,
) -> dict[str, str]:
    env = dict(os.environ)
    for source in (extra, custom):
        for key, value in source.items():
            refusal = refusal_reason(key, value)
            if refusal:
                log.warning(
                    "%s: not passing %r to hook scripts (vmId=%s): %s", point, key, vm_id, refusal
                )
                continue
            env[key] = value if isinstance(value, str) else str(value)
    env.pop(DOMXML_VAR, None)
    env.pop(JSON_VAR, None)
    env.pop("vmId", None)
    if vm_id:
        env["vmId"] = vm_id
    python_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(hooking_path), *python_path])
    if run_dir is not None:
        env[launchflags.RUN_DIR_ENV] = str(run_dir)
    env[data_var] = data_path
    return env


def refusal_reason(key: Any, value: Any) -> str:
    """Why ``key=value`` cannot go into a script's environment ('' when it can)."""
    if not isinstance(key, str) or not key or "=" in key or "\0" in key:
        return "not a valid environment variable name"
    if key in PROTECTED_VARIABLES:
        return "reserved variable"
    if not isinstance(value, (str, int, float)):
        return f"value of type {type(value).__name__}, expected a string"
    if isinstance(value, str) and "\0" in value:
        return "value contains a NUL character"
    return ""
