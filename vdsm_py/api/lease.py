"""The Lease verbs (VM leases in a domain's ``xleases`` volume): create, delete, info.

Thin: the lease identifiers are checked and handed to :mod:`storage.vm_support`, which
schedules the SPM tasks (create, delete) or looks the lease up (info). Must not touch
files or sanlock itself.
"""

from __future__ import annotations

from typing import Any

from storage import vm_support
from storage.service import StorageService
from vdsm_py.errors import invalid_parameter


def _ids(lease: dict[str, Any]) -> tuple[str, str]:
    for key in ("sd_id", "lease_id"):
        if not isinstance(lease.get(key), str):
            raise invalid_parameter(f"lease.{key}", "expected a UUID string")
    return lease["sd_id"], lease["lease_id"]


class LeaseApi:
    def __init__(self, service: StorageService) -> None:
        self.service = service

    async def create(self, lease: dict[str, Any]) -> str:
        return await vm_support.create_lease(self.service, *_ids(lease))

    async def delete(self, lease: dict[str, Any]) -> str:
        return await vm_support.delete_lease(self.service, *_ids(lease))

    async def info(self, lease: dict[str, Any]) -> dict[str, Any]:
        return await vm_support.lease_info(self.service, *_ids(lease))
