"""Hook scripts: VDSM's extension points, run by the daemon at the moments they name.

Public surface: :class:`HookRunner` (run a point's script chain, describe what is
installed), the hook point table (:data:`POINTS`, :class:`HookPoint`) and
:mod:`.launchflags`. Hook authors use the separate ``hooking`` module (``hooks/hooking.py``
at the top of the source tree), documented in ``docs/hooks.md``.

Domain package: must not import the transport or rpc layers.
"""

from vdsm_py.hooks.points import POINT_NAMES, POINTS, HookPoint, Payload, get_point
from vdsm_py.hooks.runner import HOOKING_PATH, HookRunner, ScriptFailure

__all__ = [
    "HOOKING_PATH",
    "POINTS",
    "POINT_NAMES",
    "HookPoint",
    "HookRunner",
    "Payload",
    "ScriptFailure",
    "get_point",
]
