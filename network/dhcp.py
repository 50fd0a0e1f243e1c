"""DHCP clients for networks with ``bootproto: dhcp`` (IPv4) or ``dhcpv6: true``.

Owns starting, watching and stopping one busybox ``udhcpc`` (IPv4) or ISC ``dhclient -6``
(IPv6: Debian's busybox has no ``udhcpc6``) per interface and family. Each client runs in
the managed network namespace (entered with ``nsenter --net``), detached in its own session so that it outlives a restart of the
agent, with a pidfile, a log and a lease file under ``<state_dir>/network/dhcp/``; its event
script (:mod:`network.dhcp_hook`) applies the lease over netlink. A restarted agent finds
its clients again by pidfile (checked against ``/proc/<pid>/cmdline``). A client this
process started is supervised: a watcher thread restarts it when it exits without being
told to (after ``RESTART_DELAY``); clients found again after a restart are checked by
``NetworkSetup.restore``. Stopping a client
also removes the address (and default route) of its lease, so removal and rollback leave
nothing behind. Blocking (waits for processes and leases): call from the worker pool.
Every command is an argv list; never a shell, never ``ip``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from network.netlink import IFA_F_TENTATIVE, NETNS_RUN_DIR, Netlink, NetlinkError

log = logging.getLogger("vdsm_py.network")

BUSYBOX = "busybox"
DHCLIENT = "dhclient"
STOP_TIMEOUT = 5.0
RESTART_DELAY = 1.0
QUICK_EXIT = 5.0  # a client that dies this soon after its start, MAX_QUICK_EXITS times
MAX_QUICK_EXITS = 5  # in a row, is given up on (its interface is gone, say)
POLL = 0.05
_HOOK = """#!{python}
import sys
sys.path.insert(0, {root!r})
from network.dhcp_hook import main
sys.exit(main())
"""


class DhcpError(Exception):
    """A client could not be started or got no lease in time."""


def _alive(pid: int, iface: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    client = any(b"udhcpc" in part or b"dhclient" in part for part in cmdline)
    return client and iface.encode() in cmdline


class DhcpClients:
    """The DHCP clients of one network namespace ('' = the agent's own)."""

    def __init__(self, netns: str, run_dir: Path, lease_timeout: float = 30.0) -> None:
        self.netns = netns
        self.dir = Path(run_dir)
        self.lease_timeout = lease_timeout
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.restarts = 0

    # -- files ------------------------------------------------------------------------

    def _base(self, iface: str, family: int) -> Path:
        return self.dir / f"{iface}.{'dhcp6' if family == 6 else 'dhcp4'}"

    def _pidfile(self, iface: str, family: int) -> Path:
        return self._base(iface, family).with_suffix(self._base(iface, family).suffix + ".pid")

    def lease_path(self, iface: str, family: int = 4) -> Path:
        base = self._base(iface, family)
        return base.with_suffix(base.suffix + ".lease")

    def _hook(self) -> Path:
        path = self.dir / "dhcp-event"
        root = str(Path(__file__).resolve().parents[1])
        text = _HOOK.format(python=sys.executable, root=root)
        if not path.exists() or path.read_text() != text:
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755)
        return path

    # -- state --------------------------------------------------------------------------

    def pid(self, iface: str, family: int = 4) -> int:
        """The pid of the running client for ``iface`` (0 when none runs)."""
        child = self._children.get(f"{iface}/{family}")
        if child is not None and child.poll() is None:
            return child.pid
        try:
            pid = int(self._pidfile(iface, family).read_text().strip())
        except (OSError, ValueError):
            return 0
        return pid if _alive(pid, iface) else 0

    def running(self, iface: str, family: int = 4) -> bool:
        return self.pid(iface, family) != 0

    def lease(self, iface: str, family: int = 4) -> dict[str, Any]:
        try:
            return dict(json.loads(self.lease_path(iface, family).read_text()))
        except (OSError, ValueError):
            return {}

    # -- start / stop -----------------------------------------------------------------------

    def argv(self, iface: str, family: int) -> list[str]:
        if family == 6:
            base = self._base(iface, family)
            argv = [shutil.which(DHCLIENT) or DHCLIENT, "-6", "-d", "-sf", str(self._hook()),
                    "-lf", str(base.with_suffix(base.suffix + ".leases")),
                    "-pf", str(self._pidfile(iface, family)), iface]
        else:
            argv = [shutil.which(BUSYBOX) or BUSYBOX, "udhcpc", "-f", "-i", iface,
                    "-s", str(self._hook()), "-p", str(self._pidfile(iface, family)),
                    "-t", "3", "-T", "1", "-A", "2"]
        if self.netns:
            argv = ["nsenter", f"--net={NETNS_RUN_DIR / self.netns}", "--", *argv]
        return argv

    def start(self, iface: str, *, family: int = 4, default_route: bool = False,
              blocking: bool = False, nl: Netlink | None = None) -> None:
        """Start the client for ``iface`` (replacing a stale one); with ``blocking``, wait
        for its first lease and raise :class:`DhcpError` when none comes in time. A DHCPv6
        client needs the link-local address out of duplicate address detection first
        (waited for when ``nl`` is given)."""
        self.stop(iface, family=family)
        self.dir.mkdir(parents=True, exist_ok=True)
        if family == 6 and nl is not None:
            self._wait_link_local(nl, iface)
        self._spawn(iface, family, default_route)
        if blocking:
            try:
                self.wait_lease(iface, family)
            except DhcpError:
                self.stop(iface, family=family)  # a failed step leaves nothing running
                raise

    def _spawn(self, iface: str, family: int, default_route: bool,
               quick_exits: int = 0) -> None:
        env = dict(os.environ)
        env["VDSM_PY_DHCP_DEFAULT_ROUTE"] = "1" if default_route else "0"
        log_path = self._base(iface, family).with_suffix(self._base(iface, family).suffix
                                                         + ".log")
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(
                self.argv(iface, family), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        with self._lock:
            self._children[f"{iface}/{family}"] = child
        log.info("DHCPv%d client started on %s (pid %d)", family, iface, child.pid)
        threading.Thread(target=self._watch,
                         args=(iface, family, default_route, child, quick_exits),
                         name=f"dhcp-watch-{iface}", daemon=True).start()

    def _watch(self, iface: str, family: int, default_route: bool,
               child: subprocess.Popen[bytes], quick_exits: int) -> None:
        """Restart the client if it exits while it is still wanted."""
        started = time.monotonic()
        child.wait()
        quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT else 0
        time.sleep(RESTART_DELAY)
        with self._lock:
            wanted = self._children.get(f"{iface}/{family}") is child
        if not wanted:
            return  # stopped on purpose, or already replaced
        if quick_exits >= MAX_QUICK_EXITS:
            log.error("DHCPv%d client on %s keeps exiting (last: %s): giving up", family,
                      iface, child.returncode)
            return
        log.warning("DHCPv%d client on %s (pid %d) exited with %s: restarting it", family,
                    iface, child.pid, child.returncode)
        self.restarts += 1
        try:
            # Its lease file stays: the new client's first event (deconfig) removes the old
            # lease's address before it binds a new one.
            self._spawn(iface, family, default_route, quick_exits)
        except OSError as exc:
            log.error("could not restart the DHCPv%d client on %s: %s", family, iface, exc)

    def _wait_link_local(self, nl: Netlink, iface: str) -> None:
        deadline = time.monotonic() + self.lease_timeout
        while time.monotonic() < deadline:
            flags = nl.address_flags_of(iface)
            if any(a.startswith("fe80:") and not f & IFA_F_TENTATIVE for a, f in flags.items()):
                return
            time.sleep(POLL)
        raise DhcpError(f"{iface} has no usable IPv6 link-local address for DHCPv6")

    def wait_lease(self, iface: str, family: int = 4) -> dict[str, Any]:
        deadline = time.monotonic() + self.lease_timeout
        while time.monotonic() < deadline:
            lease = self.lease(iface, family)
            if lease:
                return lease
            child = self._children.get(f"{iface}/{family}")
            if child is not None and child.poll() is not None:
                raise DhcpError(f"DHCP client on {iface} exited with {child.returncode}")
            time.sleep(POLL)
        raise DhcpError(f"no DHCP lease on {iface} within {self.lease_timeout:g} s")

    def stop(self, iface: str, *, family: int = 4, nl: Netlink | None = None,
             default_route: bool = False) -> None:
        """Stop the client of ``iface`` and remove what its lease put on the interface."""
        key = f"{iface}/{family}"
        pid = self.pid(iface, family)
        with self._lock:
            child = self._children.pop(key, None)  # no longer wanted: not to be restarted
        if pid:
            os.kill(pid, signal.SIGTERM)
            if child is not None and child.pid == pid:
                try:
                    child.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            else:
                self._wait_gone(pid, iface)
            log.info("DHCPv%d client on %s stopped (pid %d)", family, iface, pid)
        lease = self.lease(iface, family)
        if lease and nl is not None and nl.exists(iface):
            self._unapply(nl, iface, lease, default_route)
        for path in (self.lease_path(iface, family), self._pidfile(iface, family)):
            path.unlink(missing_ok=True)

    @staticmethod
    def _unapply(nl: Netlink, iface: str, lease: dict[str, Any], default_route: bool) -> None:
        try:
            if default_route and lease.get("router"):
                nl.del_default_route(lease["router"], iface)
        except NetlinkError as exc:
            log.debug("lease route of %s already gone: %s", iface, exc)
        try:
            nl.del_address(iface, lease["address"])
        except NetlinkError as exc:
            log.debug("lease address of %s already gone: %s", iface, exc)

    def _wait_gone(self, pid: int, iface: str) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid, iface) and time.monotonic() < deadline:
            time.sleep(POLL)
        if _alive(pid, iface):
            os.kill(pid, signal.SIGKILL)

    def stop_all(self, nl: Netlink | None = None) -> None:
        """Stop every client this agent runs in its namespace (tests, removal of all)."""
        if not self.dir.exists():
            return
        for pidfile in sorted(self.dir.glob("*.pid")):
            iface, _, kind = pidfile.name.removesuffix(".pid").rpartition(".")
            self.stop(iface, family=6 if kind == "dhcp6" else 4, nl=nl)
