"""The daemon's configuration: one INI file, every setting declared here with its default.

Each section is a frozen dataclass; each field carries its documentation in its metadata,
so that ``vdsm-tool config-example`` (and the committed ``etc/vdsm_py.conf``) are generated
from this one declaration and cannot drift. Unknown sections or keys and unparsable values
are refused at start-up with the file, section and key named: a typo must never silently
fall back to a default.
"""

from __future__ import annotations

import configparser
import dataclasses
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

DEFAULT_CONFIG = Path("/etc/vdsm_py/vdsm_py.conf")


def setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = setting(
        Path("/var/lib/vdsm_py"), "State that survives restarts (host UUID, persisted config)."
    )
    run_dir: Path = setting(
        Path("/run/vdsm_py"), "Runtime files: the instance lock file, sockets."
    )
    log_level: str = setting("INFO", "Logging level: DEBUG, INFO, WARNING or ERROR.")
    gc_refreeze_interval: float = setting(
        600.0,
        "Seconds between garbage-collector refreezes. Once started and recovered, the "
        "daemon's objects are frozen out of the collector's full passes (with 1000 VMs one "
        "pass costs ~100 ms of stalled calls); every interval they are collected once and "
        "frozen again. 0 leaves Python's collector as it is.",
    )


@dataclass(frozen=True)
class AddressesConfig:
    host: str = setting("::", "Address the API listens on ('::' for all, IPv4 and IPv6).")
    port: int = setting(54321, "TCP port of the JSON-RPC/STOMP API (VDSM's is 54321).")


@dataclass(frozen=True)
class PkiConfig:
    dir: Path = setting(
        Path("/etc/pki/vdsm"),
        "PKI directory in VDSM's layout: certs/cacert.pem, certs/vdsmcert.pem, "
        "keys/vdsmkey.pem. The CA certificate decides which clients may connect.",
    )
    insecure: bool = setting(
        False, "Development only: accept plaintext connections without TLS. Never in production."
    )


@dataclass(frozen=True)
class RpcConfig:
    workers: int = setting(8, "Worker threads for blocking calls (libvirt, storage, processes).")
    call_timeout: float = setting(
        60.0, "Seconds a blocking call may take before the caller gets an error and the "
        "stuck worker is replaced."
    )
    max_frame_size: int = setting(
        10 * 1024 * 1024, "Largest STOMP frame accepted, in bytes; larger ones close the "
        "connection with an ERROR frame."
    )
    max_connections: int = setting(2000, "Concurrent client connections accepted.")
    connect_timeout: float = setting(
        30.0, "Seconds a new connection has to finish TLS and send CONNECT."
    )
    heartbeat_ms: int = setting(
        10000, "Outgoing heart-beat interval (ms) when the client asks for none or a longer "
        "one; VDSM clients reconnect after 30 s of silence."
    )


@dataclass(frozen=True)
class HostConfig:
    stats_interval: float = setting(
        15.0, "Seconds between host statistics samples; rates are computed between samples."
    )
    uuid: str = setting(
        "", "Host UUID to report; empty means the DMI product UUID, else one generated "
        "once and kept in the state directory."
    )


@dataclass(frozen=True)
class HooksConfig:
    dir: Path = setting(
        Path("/usr/libexec/vdsm_py/hooks"), "Root of the hook directories (one per hook point)."
    )
    timeout: float = setting(
        60.0, "Seconds one hook script may run; past it the script and every process in its "
        "process group are killed, and that counts as a hook error."
    )


@dataclass(frozen=True)
class VirtConfig:
    libvirt_uri: str = setting(
        "qemu:///system", "libvirt connection URI of the hypervisor ('test:///default' is "
        "libvirt's embedded test driver, used by development hosts)."
    )
    domain_type: str = setting(
        "kvm", "libvirt domain type of the VMs built from a plain VM.create spec: 'kvm', or "
        "'qemu' (TCG, no hardware acceleration)."
    )
    arch: str = setting("x86_64", "Guest architecture of the VMs built from a plain spec.")
    emulated_machine: str = setting(
        "pc", "Machine type when VM.create names none ('pc', 'q35' or a versioned name)."
    )
    libvirt_timeout: float = setting(
        30.0, "Seconds one libvirt call may take before it fails (and its worker is replaced)."
    )
    stats_interval: float = setting(
        15.0, "Seconds between bulk samples of all VMs' statistics; rates are computed "
        "between two samples."
    )
    guest_agent_interval: float = setting(
        60.0, "Seconds between queries of the guest agents (IP addresses, host name, OS) of "
        "VMs whose qemu-guest-agent is connected."
    )
    guest_agent_channel: bool = setting(
        True, "Give VMs built from a plain spec a qemu-guest-agent channel."
    )
    powering_up_timeout: float = setting(
        60.0, "Seconds a started VM is reported 'Powering up' before it is reported 'Up' "
        "when no guest agent says so sooner (VDSM waits 60 s)."
    )
    shutdown_timeout: float = setting(
        120.0, "Seconds VM.shutdown waits for each method (guest agent, ACPI, force) before "
        "trying the next, when the caller gives no timeout."
    )
    create_error_wait: float = setting(
        0.1, "Seconds VM.create waits for libvirt before answering: a refusal within this "
        "time is answered as error 9 and leaves nothing behind; a later failure is reported "
        "as the VM going Down."
    )
    graphics_listen: str = setting(
        "0.0.0.0", "Address VNC/SPICE consoles listen on when the spec names none."
    )
    max_ticket_ttl: int = setting(
        86400, "Longest console ticket validity VM.setTicket accepts, in seconds."
    )
    console_disconnect_action_delay: float = setting(
        10.0, "Seconds after the console client disconnected before the ticket's "
        "disconnectAction runs (skipped if a client connected again meanwhile; VDSM: 10)."
    )
    spare_root_ports: int = setting(
        4, "Empty PCIe root ports given to q35 VMs so that devices can be hot-plugged."
    )


@dataclass(frozen=True)
class NetworkConfig:
    netns: str = setting(
        "", "Network namespace whose networks the agent manages; empty means the agent's "
        "own. Tests and development hosts point it at a private namespace."
    )
    fake_nics: str = setting(
        "dummy_*,veth_*", "Comma-separated name globs of devices treated as NICs besides "
        "physical ones (VDSM's fake_nics), for test and development hosts."
    )
    apply_timeout: float = setting(
        120.0, "Seconds one setupNetworks change (validation and kernel steps, without the "
        "connectivity check) may take."
    )
    restore_on_start: bool = setting(
        True, "At start-up, restore the persisted network configuration and remove changes "
        "that were not persisted with Host.setSafeNetworkConfig."
    )
    link_events: bool = setting(
        True, "Watch the kernel's link notifications (rtnetlink): a NIC or link that "
        "appears, goes, or changes state, MTU or master publishes |net|host_conn|no_id "
        "so that the engine refreshes the capabilities."
    )
    link_event_delay: float = setting(
        1.0, "Seconds over which link changes are gathered into one |net|host_conn|no_id "
        "event (a burst of changes, such as a large setupNetworks, sends one event)."
    )


@dataclass(frozen=True)
class StorageConfig:
    data_center: Path = setting(
        Path("/rhev/data-center"), "Data-center root: storage connections appear under its "
        "mnt/ directory (VDSM's repository)."
    )
    monitor_interval: float = setting(
        10.0, "Seconds between checks (an O_DIRECT read of the metadata) of each active "
        "storage domain."
    )
    check_timeout: float = setting(
        30.0, "Seconds one domain check may take before the domain is reported invalid; a "
        "check stuck on storage is never started twice."
    )
    sanlock_io_timeout: int = setting(
        10, "sanlock I/O timeout in seconds for new lockspaces; host id acquisition takes "
        "several of these (VDSM's default is 10)."
    )
    sanlock_run_dir: str = setting(
        "", "Directory of the sanlock daemon's socket (SANLOCK_RUN_DIR); empty means "
        "sanlock's default."
    )
    host_id_timeout: float = setting(
        120.0, "Seconds StoragePool.spmStart waits for this host's id on the master domain."
    )
    qemu_img_timeout: float = setting(
        300.0, "Seconds one qemu-img create/resize/info may take."
    )
    call_timeout: float = setting(
        600.0, "Seconds a storage verb may take on the worker pool (volume creation with "
        "preallocation can be slow)."
    )
    task_workers: int = setting(
        10, "Threads running SPM tasks (Volume.create/delete/extendSize...) at once "
        "(VDSM's irs thread_pool_size)."
    )
    max_tasks: int = setting(
        500, "Unfinished SPM tasks accepted at once; more are refused with 405."
    )
    task_hook_dir: str = setting(
        "", "TEST ONLY, leave empty. A directory where a FIFO named after a task step's "
        "action (e.g. create_volume_data) pauses every task before that step until a writer "
        "opens the FIFO; writing 'fail' makes the step fail. Used by the crash-recovery tests."
    )


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    addresses: AddressesConfig = field(default_factory=AddressesConfig)
    pki: PkiConfig = field(default_factory=PkiConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    host: HostConfig = field(default_factory=HostConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    virt: VirtConfig = field(default_factory=VirtConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    @property
    def lock_file(self) -> Path:
        return self.daemon.run_dir / "vdsmd.lock"


class ConfigError(Exception):
    pass


def _sections() -> dict[str, type]:
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _parse(value: str, kind: Any, where: str) -> Any:
    try:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind is Path:
            return Path(value.strip())
        return kind(value.strip())
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid value {value!r}: {exc}") from None


def load(path: Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read ``path`` (None: built-in defaults only), then apply ``overrides``.

    ``overrides`` maps section → key → typed value (used by ``--dev`` and tests).
    """
    values: dict[str, dict[str, Any]] = {}
    sections = _sections()
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for section in parser.sections():
            cls = sections.get(section)
            if cls is None:
                raise ConfigError(f"{path}: unknown section [{section}]")
            hints = get_type_hints(cls)
            for key, raw in parser.items(section):
                if key not in hints:
                    raise ConfigError(f"{path}: [{section}] unknown key {key!r}")
                where = f"{path}: [{section}] {key}"
                values.setdefault(section, {})[key] = _parse(raw, hints[key], where)
    for section, kv in (overrides or {}).items():
        values.setdefault(section, {}).update(kv)
    built = {name: cls(**values.get(name, {})) for name, cls in sections.items()}
    return Config(**built)


def render_example() -> str:
    """A complete, commented INI file showing every setting at its default."""
    lines = [
        "# vdsm_py configuration. Every setting is shown at its default, commented out.",
        "# Generated by 'vdsm-tool config-example'; do not edit the example by hand.",
    ]
    for name, cls in _sections().items():
        lines += ["", f"[{name}]"]
        for f in dataclasses.fields(cls):
            for doc_line in textwrap.wrap(f.metadata["doc"], 88):
                lines.append(f"# {doc_line}")
            default = f.default
            if isinstance(default, bool):
                default = "true" if default else "false"
            lines.append(f"# {f.name} = {default}")
    return "\n".join(lines) + "\n"
