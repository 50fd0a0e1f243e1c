"""The SQLite database: opening it, its schema as numbered migrations, transactions.

Migrations are plain SQL kept here in order; ``schema_version`` records the last one
applied, and :func:`open_db` applies the missing ones in one transaction each, so an engine
upgraded in place carries its data forward. The SQL sticks to what PostgreSQL also accepts
(TEXT/INTEGER/REAL, no SQLite-only types), except the event id (``INTEGER PRIMARY KEY``,
a ``BIGSERIAL`` there). Must not know the engine's records; :mod:`engine_lite.repo` maps them.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("engine_lite.db")

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE clusters (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        scheduling_policy TEXT NOT NULL DEFAULT 'even_distribution',
        mem_overcommit_pct INTEGER NOT NULL DEFAULT 100
    );
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        address TEXT NOT NULL,
        port INTEGER NOT NULL,
        status TEXT NOT NULL,
        maintenance INTEGER NOT NULL DEFAULT 0,
        status_reason TEXT NOT NULL DEFAULT '',
        agent TEXT NOT NULL DEFAULT '{}',
        cert_serial TEXT NOT NULL DEFAULT '',
        cert_not_after TEXT NOT NULL DEFAULT '',
        mem_mib INTEGER NOT NULL DEFAULT 0,
        stats TEXT NOT NULL DEFAULT '{}',
        last_seen REAL NOT NULL DEFAULT 0,
        UNIQUE (address, port)
    );
    CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cluster_id TEXT NOT NULL REFERENCES clusters(id),
        mem_mib INTEGER NOT NULL,
        vcpus INTEGER NOT NULL DEFAULT 1,
        nics TEXT NOT NULL DEFAULT '[]',
        custom TEXT NOT NULL DEFAULT '{}',
        ha INTEGER NOT NULL DEFAULT 0,
        desired TEXT NOT NULL DEFAULT 'down',
        status TEXT NOT NULL DEFAULT 'Down',
        host_id TEXT REFERENCES hosts(id) ON DELETE SET NULL,
        display TEXT NOT NULL DEFAULT '{}',
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        severity TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        host_id TEXT,
        vm_id TEXT
    );
    """,
    # 2: renewal keeps the previous serial valid until the host reloads; networks for the
    # scheduler's network filter; events are read newest first.
    """
    ALTER TABLE hosts ADD COLUMN prev_cert_serial TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN networks TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX events_time ON events (time);
    """,
    # 3: the fence agent of each host (a JSON argv list), for fencing before HA restarts.
    """
    ALTER TABLE hosts ADD COLUMN fence_agent TEXT NOT NULL DEFAULT '[]';
    """,
    # 4: VM disks on storage domains (JSON list of drives), and the domains each host sees.
    """
    ALTER TABLE vms ADD COLUMN disks TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE hosts ADD COLUMN storage_domains TEXT NOT NULL DEFAULT '[]';
    """,
)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises (DDL included)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations, each atomically; return the resulting version."""
    current = schema_version(conn)
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this engine-lite "
            f"({len(MIGRATIONS)}); upgrade engine-lite"
        )
    for number in range(current + 1, len(MIGRATIONS) + 1):
        statements = [s.strip() for s in MIGRATIONS[number - 1].split(";") if s.strip()]
        with transaction(conn):
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        log.info("database migrated to schema version %d", number)
    return len(MIGRATIONS)


def open_db(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database; ``:memory:`` works for tests."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    migrate(conn)
    return conn
