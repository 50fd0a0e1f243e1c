"""The hook points: VDSM's names, what each one is handed, and whether its errors fail.

Owns the one table of hook points. A hook point is the name of a directory under the hooks
root; the daemon runs the scripts found there at the moment the name says. Each point hands
its scripts either a domain/device XML document (``_hook_domxml``) or a JSON document
(``_hook_json``); points that carry no data (``before_vdsm_start``) are XML points handed an
empty file, exactly as VDSM does.

``fails_operation`` is VDSM's policy (``raiseError`` in ``vdsm.common.hooks``): errors of
most ``before_*`` points fail the operation, ``after_*`` errors are only logged. VDSM's
exceptions are kept: ``before_vm_destroy``, ``before_vm_set_ticket`` and
``before_vdsm_start`` never block what they precede, and ``after_disk_prepare`` (which
rewrites the prepared disk) does fail it.

This module must stay a plain table: no I/O, no imports from the rest of the daemon.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType


class Payload(enum.Enum):
    XML = "xml"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class HookPoint:
    name: str
    payload: Payload
    fails_operation: bool


def _xml(name: str, fails: bool | None = None) -> HookPoint:
    return HookPoint(name, Payload.XML, name.startswith("before_") if fails is None else fails)


def _json(name: str, fails: bool | None = None) -> HookPoint:
    return HookPoint(name, Payload.JSON, name.startswith("before_") if fails is None else fails)


_ALL = (
    # daemon life cycle (no data: an empty _hook_domxml file)
    _xml("before_vdsm_start", fails=False),
    _xml("after_vdsm_stop"),
    # VM life cycle
    _xml("before_vm_start"),
    _xml("after_vm_start"),
    _xml("before_vm_cont"),
    _xml("after_vm_cont"),
    _xml("before_vm_pause"),
    _xml("after_vm_pause"),
    _xml("before_vm_hibernate"),
    _xml("after_vm_hibernate"),
    _xml("before_vm_dehibernate"),
    _xml("after_vm_dehibernate"),
    _xml("before_vm_destroy", fails=False),
    _xml("after_vm_destroy"),
    _xml("before_vm_set_ticket", fails=False),
    _xml("after_vm_set_ticket"),
    _xml("before_set_num_of_cpus"),
    _xml("after_set_num_of_cpus"),
    _xml("before_memory_hotplug"),
    _xml("after_memory_hotplug"),
    # devices
    _xml("before_device_create"),
    _xml("after_device_create"),
    _xml("before_device_destroy"),
    _xml("after_device_destroy"),
    _xml("before_nic_hotplug"),
    _xml("after_nic_hotplug"),
    _xml("after_nic_hotplug_fail"),
    _xml("before_nic_hotunplug"),
    _xml("after_nic_hotunplug"),
    _xml("after_nic_hotunplug_fail"),
    _xml("before_disk_hotplug"),
    _xml("after_disk_hotplug"),
    _xml("before_disk_hotunplug"),
    _xml("after_disk_hotunplug"),
    _xml("before_update_device"),
    _xml("after_update_device"),
    _xml("after_update_device_fail"),
    # migration
    _xml("before_vm_migrate_source"),
    _xml("after_vm_migrate_source"),
    _xml("before_vm_migrate_destination"),
    _xml("after_vm_migrate_destination"),
    _xml("before_device_migrate_source"),
    _xml("after_device_migrate_source"),
    _xml("before_device_migrate_destination"),
    _xml("after_device_migrate_destination"),
    # JSON documents: storage, network, capabilities and statistics
    _json("after_disk_prepare", fails=True),
    _json("before_network_setup"),
    _json("after_network_setup"),
    _json("after_network_setup_fail"),
    _json("before_get_caps"),
    _json("after_get_caps"),
    _json("before_get_stats"),
    _json("after_get_stats"),
    _json("before_get_vm_stats"),
    _json("after_get_vm_stats"),
    _json("before_get_all_vm_stats"),
    _json("after_get_all_vm_stats"),
    _json("after_hostdev_list_by_caps"),
)

POINTS: MappingProxyType[str, HookPoint] = MappingProxyType({p.name: p for p in _ALL})
"""Every known hook point by name (read-only)."""

POINT_NAMES: frozenset[str] = frozenset(POINTS)


def get_point(name: str) -> HookPoint:
    """The hook point called ``name``; an unknown name is a programming error."""
    try:
        return POINTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown hook point {name!r}") from None
