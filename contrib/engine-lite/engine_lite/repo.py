"""The repository: stores and loads the engine's records; the only code that writes SQL.

:class:`Repository` is the interface the engine uses (a PostgreSQL implementation would
provide the same methods); :class:`SqliteRepository` implements it on :mod:`engine_lite.db`.
Methods are synchronous and short; the engine runs them off the event loop through
:class:`engine_lite.store.Store`. Uniqueness is enforced by the database and reported as
:class:`~engine_lite.errors.AlreadyExists`; lookups by name or id raise
:class:`~engine_lite.errors.NotFound`. Must not hold business rules (scheduling, states).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from engine_lite.db import open_db, transaction
from engine_lite.errors import AlreadyExists, NotFound
from engine_lite.models import Cluster, Desired, Event, Host, HostStatus, Vm

DEFAULT_CLUSTER = "Default"

_HOST_JSON = ("agent", "stats", "networks")
_VM_JSON = ("nics", "custom", "display")


class Repository(Protocol):
    def default_cluster(self) -> Cluster: ...
    def add_host(self, host: Host) -> None: ...
    def find_host(self, ref: str) -> Host: ...
    def list_hosts(self) -> list[Host]: ...
    def save_host(self, host: Host) -> None: ...
    def remove_host(self, host_id: str) -> None: ...
    def add_vm(self, vm: Vm) -> None: ...
    def find_vm(self, ref: str) -> Vm: ...
    def list_vms(self) -> list[Vm]: ...
    def save_vm(self, vm: Vm) -> None: ...
    def remove_vm(self, vm_id: str) -> None: ...
    def add_event(self, severity: str, kind: str, message: str, *,
                  host_id: str | None = None, vm_id: str | None = None) -> Event: ...
    def list_events(self, limit: int = 100, after_id: int = 0) -> list[Event]: ...
    def close(self) -> None: ...


def new_id() -> str:
    return str(uuid.uuid4())


class SqliteRepository:
    """:class:`Repository` on one SQLite file (``:memory:`` for tests)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn = open_db(path)
        self._lock = threading.Lock()  # one statement sequence at a time on the connection

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- clusters -----------------------------------------------------------------------

    def default_cluster(self) -> Cluster:
        with self._lock, transaction(self._conn) as c:
            row = c.execute("SELECT * FROM clusters WHERE name = ?", (DEFAULT_CLUSTER,)).fetchone()
            if row is None:
                cluster = Cluster(new_id(), DEFAULT_CLUSTER)
                c.execute(
                    "INSERT INTO clusters (id, name, scheduling_policy, mem_overcommit_pct) "
                    "VALUES (?, ?, ?, ?)",
                    (cluster.id, cluster.name, cluster.scheduling_policy,
                     cluster.mem_overcommit_pct),
                )
                return cluster
        return Cluster(row["id"], row["name"], row["scheduling_policy"],
                       row["mem_overcommit_pct"])

    # -- hosts --------------------------------------------------------------------------

    def add_host(self, host: Host) -> None:
        row = _host_row(host)
        try:
            self._write(
                f"INSERT INTO hosts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(_duplicate_host(exc, host)) from None

    def find_host(self, ref: str) -> Host:
        row = self._one("SELECT * FROM hosts WHERE id = ? OR name = ?", (ref, ref))
        if row is None:
            raise NotFound(f"no host named {ref!r}")
        return _host(row)

    def list_hosts(self) -> list[Host]:
        return [_host(r) for r in self._all("SELECT * FROM hosts ORDER BY name", ())]

    def save_host(self, host: Host) -> None:
        row = _host_row(host)
        row.pop("id")
        sets = ", ".join(f"{k} = ?" for k in row)
        self._write(f"UPDATE hosts SET {sets} WHERE id = ?", (*row.values(), host.id))

    def remove_host(self, host_id: str) -> None:
        self._write("DELETE FROM hosts WHERE id = ?", (host_id,))

    # -- VMs ----------------------------------------------------------------------------

    def add_vm(self, vm: Vm) -> None:
        row = _vm_row(vm)
        try:
            self._write(
                f"INSERT INTO vms ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"a VM named {vm.name!r} already exists") from None

    def find_vm(self, ref: str) -> Vm:
        row = self._one("SELECT * FROM vms WHERE id = ? OR name = ?", (ref, ref))
        if row is None:
            raise NotFound(f"no VM named {ref!r}")
        return _vm(row)

    def list_vms(self) -> list[Vm]:
        return [_vm(r) for r in self._all("SELECT * FROM vms ORDER BY name", ())]

    def save_vm(self, vm: Vm) -> None:
        row = _vm_row(vm)
        row.pop("id")
        sets = ", ".join(f"{k} = ?" for k in row)
        self._write(f"UPDATE vms SET {sets} WHERE id = ?", (*row.values(), vm.id))

    def remove_vm(self, vm_id: str) -> None:
        self._write("DELETE FROM vms WHERE id = ?", (vm_id,))

    # -- events -------------------------------------------------------------------------

    def add_event(self, severity: str, kind: str, message: str, *,
                  host_id: str | None = None, vm_id: str | None = None) -> Event:
        now = time.time()
        with self._lock, transaction(self._conn) as c:
            cur = c.execute(
                "INSERT INTO events (time, severity, kind, message, host_id, vm_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now, severity, kind, message, host_id, vm_id),
            )
            event_id = int(cur.lastrowid or 0)
        return Event(event_id, now, severity, kind, message, host_id, vm_id)

    def list_events(self, limit: int = 100, after_id: int = 0) -> list[Event]:
        rows = self._all(
            "SELECT * FROM (SELECT * FROM events WHERE id > ? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id",
            (after_id, limit),
        )
        return [Event(r["id"], r["time"], r["severity"], r["kind"], r["message"],
                      r["host_id"], r["vm_id"]) for r in rows]

    # -- plumbing -----------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock, transaction(self._conn) as c:
            c.execute(sql, params)

    def _one(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())


def _duplicate_host(exc: sqlite3.IntegrityError, host: Host) -> str:
    if "hosts.name" in str(exc):
        return f"a host named {host.name!r} already exists"
    if "hosts.address" in str(exc) or "hosts.port" in str(exc):
        return f"a host at {host.address}:{host.port} is already registered"
    return f"host {host.name!r} conflicts with a registered host: {exc}"


def _host_row(h: Host) -> dict[str, Any]:
    return {
        "id": h.id, "name": h.name, "cluster_id": h.cluster_id, "address": h.address,
        "port": h.port, "status": str(h.status), "maintenance": int(h.maintenance),
        "status_reason": h.status_reason, "agent": json.dumps(h.agent),
        "cert_serial": h.cert_serial, "prev_cert_serial": h.prev_cert_serial,
        "cert_not_after": h.cert_not_after, "mem_mib": h.mem_mib,
        "networks": json.dumps(h.networks), "stats": json.dumps(h.stats),
        "last_seen": h.last_seen, "fence_agent": json.dumps(h.fence_agent),
        "storage_domains": json.dumps(h.storage_domains),
    }


def _host(r: sqlite3.Row) -> Host:
    return Host(
        id=r["id"], name=r["name"], cluster_id=r["cluster_id"], address=r["address"],
        port=r["port"], status=HostStatus(r["status"]), maintenance=bool(r["maintenance"]),
        status_reason=r["status_reason"], agent=json.loads(r["agent"]),
        cert_serial=r["cert_serial"], prev_cert_serial=r["prev_cert_serial"],
        cert_not_after=r["cert_not_after"], mem_mib=r["mem_mib"],
        networks=json.loads(r["networks"]), stats=json.loads(r["stats"]),
        last_seen=r["last_seen"], fence_agent=json.loads(r["fence_agent"]),
        storage_domains=json.loads(r["storage_domains"]),
    )


def _vm_row(v: Vm) -> dict[str, Any]:
    return {
        "id": v.id, "name": v.name, "cluster_id": v.cluster_id, "mem_mib": v.mem_mib,
        "vcpus": v.vcpus, "nics": json.dumps(v.nics), "custom": json.dumps(v.custom),
        "ha": int(v.ha), "desired": str(v.desired), "status": v.status, "host_id": v.host_id,
        "display": json.dumps(v.display), "last_error": v.last_error,
        "disks": json.dumps(v.disks),
    }


def _vm(r: sqlite3.Row) -> Vm:
    return Vm(
        id=r["id"], name=r["name"], cluster_id=r["cluster_id"], mem_mib=r["mem_mib"],
        vcpus=r["vcpus"], nics=json.loads(r["nics"]), custom=json.loads(r["custom"]),
        ha=bool(r["ha"]), desired=Desired(r["desired"]), status=r["status"],
        host_id=r["host_id"], display=json.loads(r["display"]), last_error=r["last_error"],
        disks=json.loads(r["disks"]),
    )
