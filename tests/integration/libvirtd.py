"""Private, real libvirtd + virtlogd instances for integration tests.

Each instance lives in its own mount namespace (``unshare -m --propagation private``) with
private directories bind-mounted over ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt``, ``/var/log/libvirt`` and ``/etc/libvirt``; its configuration carries a
random ``host_uuid``, so two instances on one machine look like two hosts (for migration).
Clients reach it from the normal namespace through the bind-mount source:
``qemu+unix:///system?socket=<root>/run/libvirt-sock``.

Everything is stopped by PID (libvirtd is our child; virtlogd and QEMU by their pidfiles),
with timeouts everywhere, even when the tests failed. Daemon and QEMU logs stay under the
instance's root for debugging. This module must not touch the machine's own libvirt state
(it never starts anything outside the private namespace, and kills nothing it did not start).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vdsm_py.tests.libvirtd")

REQUIRED_BINARIES = ("libvirtd", "virtlogd", "qemu-system-x86_64", "unshare")

# Private directory (under the instance root) -> system path it replaces in the namespace.
MOUNTS = (
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
    ("etc", "/etc/libvirt"),
)

# Runs inside the new mount namespace. A fixed script: every variable part is an argument.
#   $1 virtlogd pidfile, $2 libvirtd pidfile, then pairs of (private dir, system dir).
_NAMESPACE_SCRIPT = r"""
set -eu
virtlogd_pidfile=$1; libvirtd_pidfile=$2; shift 2
while [ $# -gt 0 ]; do
    mkdir -p "$2"
    mount --bind "$1" "$2"
    shift 2
done
virtlogd -d -p "$virtlogd_pidfile"
exec libvirtd -p "$libvirtd_pidfile"
"""


def missing_binaries() -> list[str]:
    """Binaries a real libvirtd + QEMU needs that this machine lacks."""
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


def _silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default; tests read exceptions instead."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def call_with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run a blocking (libvirt) call in a thread; raise TimeoutError if it hangs."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"libvirtd-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not finish in {timeout}s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent reaps it).
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _kill_pid(pid: int, expected_exe: str, timeout: float) -> None:
    """SIGTERM then SIGKILL ``pid``, but only if it still runs ``expected_exe``."""
    if not expected_exe or not _process_exe_name(pid).startswith(expected_exe):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        log.warning("pid %d (%s) ignored SIGTERM, killing it", pid, expected_exe)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class LibvirtdInstance:
    """One running private libvirtd; ``root`` holds its sockets, config, state and logs."""

    root: Path
    proc: subprocess.Popen[bytes]
    host_uuid: str
    caps_cache: Path | None = None

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def daemon_log(self) -> Path:
        return self.root / "libvirtd.log"

    @property
    def virtlogd_pidfile(self) -> Path:
        return self.root / "virtlogd.pid"

    def qemu_log(self, domain_name: str) -> str:
        """The QEMU log of a domain (its command line and stderr), for failure messages."""
        path = self.root / "log" / "qemu" / f"{domain_name}.log"
        try:
            return path.read_text(errors="replace")[-10000:]
        except OSError:
            return ""

    def logs(self) -> str:
        """The tails of libvirtd's stderr and log file, for failure messages."""
        parts = []
        for path in (self.daemon_log, self.root / "log" / "libvirtd-daemon.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path}\n" + path.read_text(errors="replace")[-5000:])
        return "\n".join(parts)

    def connect(self, timeout: float = 30.0) -> Any:
        """A new read-write connection (``libvirt.virConnect``); the caller closes it."""
        import libvirt

        _silence_libvirt_stderr()
        return call_with_timeout(lambda: libvirt.open(self.uri), timeout, "libvirt.open")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the socket answers a real call (or the daemon died)."""
        import libvirt

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(
                    f"libvirtd exited with {self.proc.returncode}:\n{self.logs()}"
                )
            if self.socket.exists():
                try:
                    conn = self.connect(timeout=10)
                    try:
                        call_with_timeout(conn.getLibVersion, 10, "getLibVersion")
                        return
                    finally:
                        conn.close()
                except (libvirt.libvirtError, TimeoutError) as exc:
                    last_error = exc
            time.sleep(0.1)
        raise RuntimeError(
            f"libvirtd at {self.socket} not ready after {timeout}s ({last_error}):\n{self.logs()}"
        )

    def probe_capabilities(self, timeout: float = 120.0) -> None:
        """Make libvirt probe QEMU now (it caches the result under ``cache/``)."""
        conn = self.connect()
        try:
            call_with_timeout(conn.getCapabilities, timeout, "getCapabilities")
        finally:
            conn.close()

    def destroy_all_domains(self, timeout: float = 60.0) -> list[str]:
        """Destroy and undefine every domain of this instance; return their names."""
        import libvirt

        def run() -> list[str]:
            names = []
            conn = libvirt.open(self.uri)
            try:
                for dom in conn.listAllDomains():
                    try:
                        names.append(dom.name())
                        if dom.isActive():
                            dom.destroy()
                        if dom.isPersistent():
                            dom.undefineFlags(
                                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                            )
                    except libvirt.libvirtError as exc:
                        # Typically gone meanwhile (a transient domain that stopped).
                        log.info("cleaning up a domain of %s: %s", self.root, exc)
            finally:
                conn.close()
            return names

        _silence_libvirt_stderr()
        return call_with_timeout(run, timeout, "destroy_all_domains")

    def qemu_pids(self) -> list[int]:
        """PIDs of QEMU processes this instance started (from libvirt's pidfiles)."""
        pids = []
        for pidfile in (self.root / "run" / "qemu").glob("*.pid"):
            pid = _pid_from_file(pidfile)
            if pid and pid_alive(pid) and _process_exe_name(pid).startswith("qemu-system"):
                pids.append(pid)
        return pids

    def stop(self, timeout: float = 30.0) -> None:
        """Stop everything this instance started, by PID; never raises for cleanup trouble."""
        import libvirt

        if self.running():
            try:
                left = self.destroy_all_domains()
                if left:
                    log.info("destroyed leftover domains on %s: %s", self.root, left)
            except (libvirt.libvirtError, TimeoutError, OSError) as exc:
                # Keep going: the daemons and QEMU are stopped by PID below regardless.
                log.warning("could not destroy domains on %s: %s", self.root, exc)
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("libvirtd %d ignored SIGTERM, killing it", self.proc.pid)
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.qemu_pids():
            log.warning("killing leftover QEMU pid %d of %s", pid, self.root)
            _kill_pid(pid, "qemu-system", timeout)
        virtlogd = _pid_from_file(self.virtlogd_pidfile)
        if virtlogd:
            _kill_pid(virtlogd, "virtlogd", timeout)
        if self.caps_cache:
            _copy_caps(self.root / "cache" / _CAPS_SUBDIR, self.caps_cache)


# QEMU capabilities probed by libvirt (~8 s per fresh instance here). Sharing them between
# instances is safe: libvirt re-validates each file (QEMU binary, libvirt version, host) and
# probes again when it is stale.
_CAPS_SUBDIR = Path("qemu") / "capabilities"


def _copy_caps(source: Path, target: Path) -> None:
    try:
        files = list(source.glob("*.xml"))
        if files:
            target.mkdir(parents=True, exist_ok=True)
        for path in files:
            tmp = target / f".{path.name}.{os.getpid()}"
            shutil.copyfile(path, tmp)
            os.replace(tmp, target / path.name)
    except OSError as exc:
        log.warning("cannot copy QEMU capabilities from %s to %s: %s", source, target, exc)


def _write_config(root: Path, host_uuid: str) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    # Only the files we mean: no default network, no hooks of the machine's own libvirt.
    (etc / "libvirtd.conf").write_text(
        f'host_uuid = "{host_uuid}"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd-daemon.log"\n'
        "keepalive_interval = 5\n"
        "keepalive_count = 5\n"
    )
    (etc / "virtlogd.conf").write_text(
        'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n'
    )
    # QEMU runs as root: test files live in root-only temporary directories.
    (etc / "qemu.conf").write_text(
        'user = "root"\n'
        'group = "root"\n'
        'vnc_listen = "127.0.0.1"\n'
        'spice_listen = "127.0.0.1"\n'
    )
    (etc / "qemu").mkdir(exist_ok=True)


def start_libvirtd(
    root: Path, *, caps_cache: Path | None = None, timeout: float = 60.0
) -> LibvirtdInstance:
    """Start a private virtlogd + libvirtd rooted at ``root`` and wait until it answers.

    ``root`` should be short (unix socket paths are limited to 107 bytes). ``caps_cache``,
    when given, is a directory shared between instances and sessions that seeds libvirt's
    QEMU capabilities cache and receives it back at :meth:`LibvirtdInstance.stop`.
    """
    missing = missing_binaries()
    if missing:
        raise FileNotFoundError(f"cannot start libvirtd, missing: {', '.join(missing)}")
    root = root.resolve()
    for private, _system in MOUNTS:
        (root / private).mkdir(parents=True, exist_ok=True)
    if len(str(root / "run" / "libvirt-sock")) > 100:
        raise ValueError(f"libvirtd root {root} is too long for a unix socket path")
    host_uuid = str(uuid.uuid4())
    _write_config(root, host_uuid)
    if caps_cache:
        _copy_caps(caps_cache, root / "cache" / _CAPS_SUBDIR)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT,
            "libvirtd-ns", str(root / "virtlogd.pid"), str(root / "libvirtd.pid")]
    for private, system in MOUNTS:
        argv += [str(root / private), system]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    with open(root / "libvirtd.log", "ab") as log_file:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
            start_new_session=True,
        )
    instance = LibvirtdInstance(root, proc, host_uuid, caps_cache)
    try:
        instance.wait_ready(timeout)
    except BaseException:
        instance.stop()
        raise
    if caps_cache:
        instance.probe_capabilities()
        _copy_caps(root / "cache" / _CAPS_SUBDIR, caps_cache)
    log.info("libvirtd %d ready at %s", proc.pid, instance.uri)
    return instance
