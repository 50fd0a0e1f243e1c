"""The one exception hierarchy of vdsm_py, carrying VDSM's numeric error codes.

Domain code (virt, storage, network, host) raises these; the RPC layer turns them into
JSON-RPC errors in exactly one place (``vdsm_py.rpc.dispatch``). Nothing here knows about
the transport. Codes and default messages follow VDSM's ``vdsm.common.exception`` and
``define.py`` so that existing engines understand them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VdsmError(Exception):
    """Base of every error that is reported to a client with a VDSM code.

    ``message`` is what the client sees; keep it precise and free of tracebacks.
    ``data`` is optional structured detail (for example which parameter was wrong).
    """

    code: ClassVar[int] = 100
    default_message: ClassVar[str] = "General Exception"

    def __init__(self, message: str | None = None, *, data: Any = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class GeneralError(VdsmError):
    code = 100
    default_message = "General Exception"


# --- virt (VDSM define.py) -------------------------------------------------------------


class NoSuchVM(VdsmError):
    code = 1
    default_message = "Virtual machine does not exist"


class VMExists(VdsmError):
    code = 4
    default_message = "Virtual machine already exists"


class VMCreateError(VdsmError):
    code = 9
    default_message = "Error creating the requested VM"


class VMNotRunning(VdsmError):
    code = 10
    default_message = "Virtual machine is not running"


class MissingParameter(VdsmError):
    code = 11
    default_message = "Missing required parameter"


class MigrationError(VdsmError):
    code = 12
    default_message = "Fatal error during migration"


class UnexpectedError(VdsmError):
    code = 16
    default_message = "Unexpected exception"


class TicketError(VdsmError):
    code = 18
    default_message = "Error setting VM ticket"


class ResourceUnavailable(VdsmError):
    """The resource is busy (VDSM's ``unavail``): try again later."""

    code = 40
    default_message = "Resource unavailable"


class DestroyError(VdsmError):
    code = 42
    default_message = "Failed to destroy VM"


class NotImplementedVerb(VdsmError):
    code = 44
    default_message = "Not implemented"


class HotplugNicError(VdsmError):
    code = 49
    default_message = "Failed to hotplug NIC"


class HotunplugNicError(VdsmError):
    code = 50
    default_message = "Failed to hot-unplug NIC"


class HotplugDiskError(VdsmError):
    code = 45
    default_message = "Failed to hotplug disk"


class HotunplugDiskError(VdsmError):
    code = 46
    default_message = "Failed to hot-unplug disk"


class UpdateDeviceError(VdsmError):
    code = 56
    default_message = "Failed to update device"


class MigrationInProgress(VdsmError):
    code = 51
    default_message = "Command not supported during migration"


class InvalidParameter(VdsmError):
    code = 91
    default_message = "Invalid parameter"


class RecoveryInProgress(VdsmError):
    code = 99
    default_message = "Recovering from crash or Initializing"


class HookError(VdsmError):
    code = 1500
    default_message = "Hook error"


class CallTimeout(VdsmError):
    """A blocking call (libvirt, storage, subprocess) did not finish in time.

    Reported as VDSM's ``unavail`` so the engine retries rather than giving up.
    """

    code = 40
    default_message = "Operation timed out"


def missing_parameter(name: str) -> MissingParameter:
    return MissingParameter(f"Missing required parameter: {name}", data={"param": name})


def invalid_parameter(name: str, why: str) -> InvalidParameter:
    return InvalidParameter(f"Invalid parameter: {name}: {why}", data={"param": name})
