"""VM statuses and exit reasons as VDSM reports them on the wire.

Owns the vocabulary only: the status strings (``vmstatus`` in VDSM), the exit codes and the
numbered exit reasons with their messages (``vmexitreason``), and :class:`ExitInfo`, the
record a Down VM carries. No behaviour, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class VmStatus(enum.StrEnum):
    WAIT_FOR_LAUNCH = "WaitForLaunch"
    POWERING_UP = "Powering up"
    UP = "Up"
    PAUSED = "Paused"
    POWERING_DOWN = "Powering down"
    REBOOT_IN_PROGRESS = "RebootInProgress"
    DOWN = "Down"


# Statuses in which the VM has a running (or paused) libvirt domain.
RUNNING_STATUSES = frozenset(
    {
        VmStatus.POWERING_UP,
        VmStatus.UP,
        VmStatus.PAUSED,
        VmStatus.POWERING_DOWN,
        VmStatus.REBOOT_IN_PROGRESS,
    }
)


class ExitCode(enum.IntEnum):
    NORMAL = 0
    ERROR = 1


class ExitReason(enum.IntEnum):
    SUCCESS = 0
    GENERIC_ERROR = 1
    LOST_QEMU_CONNECTION = 2
    LIBVIRT_START_FAILED = 3
    MIGRATION_SUCCEEDED = 4
    SAVE_STATE_SUCCEEDED = 5
    ADMIN_SHUTDOWN = 6
    USER_SHUTDOWN = 7
    MIGRATION_FAILED = 8
    LIBVIRT_DOMAIN_MISSING = 9
    DESTROYED_ON_STARTUP = 10
    HOST_SHUTDOWN = 11

    @property
    def message(self) -> str:
        return _EXIT_MESSAGES[self]


_EXIT_MESSAGES = {
    ExitReason.SUCCESS: "VM terminated successfully",
    ExitReason.GENERIC_ERROR: "VM terminated with error",
    ExitReason.LOST_QEMU_CONNECTION: "Lost connection with qemu process",
    ExitReason.LIBVIRT_START_FAILED: "failed to start libvirt vm",
    ExitReason.MIGRATION_SUCCEEDED: "Migration succeeded",
    ExitReason.SAVE_STATE_SUCCEEDED: "SaveState succeeded",
    ExitReason.ADMIN_SHUTDOWN: "Admin shut down from the engine",
    ExitReason.USER_SHUTDOWN: "User shut down from within the guest",
    ExitReason.MIGRATION_FAILED: "VM failed to migrate",
    ExitReason.LIBVIRT_DOMAIN_MISSING: "Failed to find the libvirt domain",
    ExitReason.DESTROYED_ON_STARTUP: "VM destroyed during the startup",
    ExitReason.HOST_SHUTDOWN: "VM has been terminated on the host",
}


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """Why a VM is Down: VDSM's ``exitCode``, ``exitMessage`` and ``exitReason``."""

    code: ExitCode
    reason: ExitReason
    message: str

    @classmethod
    def of(cls, code: ExitCode, reason: ExitReason, message: str = "") -> ExitInfo:
        return cls(code, reason, message or reason.message)

    def wire(self) -> dict[str, Any]:
        return {
            "exitCode": int(self.code),
            "exitMessage": self.message,
            "exitReason": int(self.reason),
        }
