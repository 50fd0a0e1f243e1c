"""engine-lite's settings: one frozen dataclass, each field documented, loadable from INI.

Every timing is here so tests can shrink them. The file is ``STATE_DIR/engine-lite.conf``
(section ``[engine]``), optional; unknown keys are refused so that a typo is not silently
ignored.
"""

from __future__ import annotations

# ruff: noqa: RUF009 - field() with documentation metadata, evaluated once per class
import configparser
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_lite.errors import InvalidInput


def _doc(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class EngineConfig:
    state_dir: Path = _doc(Path("/var/lib/engine-lite"), "database, CA, engine identity, socket")
    vm_stats_interval: float = _doc(3.0, "seconds between Host.getAllVmStats per host (oVirt: 3)")
    host_stats_interval: float = _doc(15.0, "seconds between Host.getStats per host (oVirt: 15)")
    heartbeat_ms: int = _doc(10000, "STOMP heart-beat asked of hosts; 2 missed = connection lost")
    call_timeout: float = _doc(10.0, "seconds to wait for a host's answer to one call")
    connect_timeout: float = _doc(10.0, "seconds for TCP + TLS + STOMP CONNECT to a host")
    nonresponsive_after: float = _doc(
        60.0, "seconds a host may stay Connecting before it is marked NonResponsive")
    backoff_initial: float = _doc(1.0, "first reconnect delay, doubled after each failure")
    backoff_max: float = _doc(30.0, "longest reconnect delay")
    enroll_timeout: float = _doc(60.0, "seconds for an enrolled host to come back with its cert")
    host_cert_days: int = _doc(365, "validity of the host certificates the engine signs")
    renew_before_days: float = _doc(30.0, "renew a host certificate this long before expiry")
    renew_check_interval: float = _doc(3600.0, "seconds between certificate expiry checks")
    fence_timeout: float = _doc(60.0, "seconds a host's fence agent may run before it failed")
    fence_retry_interval: float = _doc(
        60.0, "seconds between fencing attempts while a NonResponsive host holds highly "
        "available VMs that could not be restarted elsewhere yet")
    ticket_ttl: int = _doc(120, "default validity of console tickets, seconds (oVirt: 120)")
    scheduling_policy: str = _doc("even_distribution", "even_distribution | power_saving")
    mem_overcommit_pct: int = _doc(100, "schedulable memory as a percentage of host memory")
    host_reserved_mib: int = _doc(256, "memory kept for the host itself when scheduling")
    vdsm_tool: tuple[str, ...] = _doc(
        (), "argv of vdsm-tool for host-side tasks on local hosts (default: this Python's "
        "vdsm_py.cli.tool module)")

    @property
    def db_path(self) -> Path:
        return self.state_dir / "engine.db"

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"

    @property
    def identity_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "engine.sock"

    @classmethod
    def load(cls, state_dir: Path, **overrides: Any) -> EngineConfig:
        """Defaults, then ``STATE_DIR/engine-lite.conf`` if present, then ``overrides``."""
        values: dict[str, Any] = {"state_dir": state_dir}
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(state_dir / "engine-lite.conf")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if parser.has_section("engine"):
            for key, raw in parser.items("engine"):
                if key not in fields or key == "state_dir":
                    raise InvalidInput(f"unknown setting {key!r} in engine-lite.conf")
                values[key] = _convert(fields[key], raw)
        values.update(overrides)
        return cls(**values)


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind: Any = type(f.default)
    try:
        if kind is tuple:
            return tuple(raw.split())
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"setting {f.name}: {raw!r} is not a {kind.__name__}") from None
