"""Host-side enrollment tasks, and how the engine gets them run on a host.

Enrollment needs three things done *on the host*: make a CSR for the host's own key (the
key never leaves the host's PKI directory), install the signed certificate and the engine
CA (from then on the daemon accepts only clients holding an engine certificate), and make
the daemon use them. On a real host these would run over SSH as oVirt's host-deploy does;
:class:`LocalHostAgent` runs them for a host on this machine by calling ``vdsm-tool pki
csr`` / ``vdsm-tool pki install`` against its PKI directory.

Applying new certificates: vdsm_py's daemon reloads its certificate and trusted CA on
SIGHUP, for new connections, without a restart. For a ``vdsmd --dev DIR`` host the agent
sends that signal (``apply: "dev-reload"``; a dev host that is not running is started);
otherwise it runs a command (e.g. ``systemctl reload vdsm_py``), or does nothing and lets
the admin do it (``apply: "manual"``; the host stays Installing until it presents the
engine's certificate). Must not talk JSON-RPC to the host (the engine does).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import shlex
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_lite.errors import EnrollmentError, InvalidInput

log = logging.getLogger("engine_lite.hostside")

APPLY_MODES = ("manual", "dev-reload", "command")
TOOL_TIMEOUT = 60.0


@dataclass
class CertBackup:
    cert: bytes | None
    cacert: bytes | None


@dataclass
class LocalHostAgent:
    """Runs the host-side tasks for a host whose PKI directory is on this machine.

    ``spec`` (stored with the host): ``pki_dir``; ``apply`` (one of :data:`APPLY_MODES`);
    ``dev_dir`` for dev-reload; ``command`` (argv) for command; ``names``/``ips`` for the
    certificate's SANs.
    """

    spec: dict[str, Any]
    tool: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_dev_host(cls, dev_dir: Path, address: str, **kw: Any) -> LocalHostAgent:
        dev_dir = dev_dir.resolve()
        return cls(_spec(dev_dir / "pki", address, apply="dev-reload", dev_dir=str(dev_dir)),
                   **kw)

    @classmethod
    def for_pki_dir(cls, pki_dir: Path, address: str, *, apply: str = "manual",
                    command: str | None = None, **kw: Any) -> LocalHostAgent:
        if apply not in APPLY_MODES:
            raise InvalidInput(f"unknown apply mode {apply!r} (use {', '.join(APPLY_MODES)})")
        if apply == "command" and not command:
            raise InvalidInput("apply mode 'command' needs the restart command")
        extra = {"command": shlex.split(command)} if command else {}
        return cls(_spec(pki_dir.resolve(), address, apply=apply, **extra), **kw)

    @property
    def pki_dir(self) -> Path:
        return Path(self.spec["pki_dir"])

    def check(self) -> None:
        """Refuse early, before anything changes, if the host's PKI directory is not there."""
        key = self.pki_dir / "keys" / "vdsmkey.pem"
        if not key.is_file():
            raise EnrollmentError(
                f"the host's key {key} does not exist; is {self.pki_dir} a vdsm_py PKI dir?")

    async def make_csr(self) -> bytes:
        args = ["pki", "csr", "--dir", str(self.pki_dir)]
        for name in self.spec.get("names", []):
            args += ["--name", name]
        for ip in self.spec.get("ips", []):
            args += ["--ip", ip]
        return await self._tool(args, "make the host's certificate request")

    def backup(self) -> CertBackup:
        certs = self.pki_dir / "certs"
        return CertBackup(_read(certs / "vdsmcert.pem"), _read(certs / "cacert.pem"))

    async def install(self, cert_pem: bytes, cacert_pem: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="engine-lite-") as tmp:
            cert, cacert = Path(tmp) / "cert.pem", Path(tmp) / "cacert.pem"
            cert.write_bytes(cert_pem)
            cacert.write_bytes(cacert_pem)
            await self._tool(["pki", "install", "--dir", str(self.pki_dir), "--cert", str(cert),
                              "--cacert", str(cacert)], "install the host certificate")

    async def restore(self, backup: CertBackup) -> None:
        """Put back the certificates :meth:`backup` saw (rollback of a failed enrollment)."""
        if backup.cert is None or backup.cacert is None:
            return
        await self.install(backup.cert, backup.cacert)

    async def apply(self) -> None:
        mode = self.spec.get("apply", "manual")
        if mode == "dev-reload":
            await reload_dev_host(Path(self.spec["dev_dir"]), self.tool_python(), self.env)
        elif mode == "command":
            await self._run(list(self.spec["command"]), "restart the host daemon")
        else:
            log.info("host at %s: restart its daemon to load the engine's certificates",
                     self.pki_dir)

    def tool_python(self) -> str:
        return self.tool[0] if self.tool and self.tool[0].endswith(("python", "python3")) \
            else sys.executable

    async def _tool(self, args: list[str], what: str) -> bytes:
        argv = [*(self.tool or (sys.executable, "-m", "vdsm_py.cli.tool")), *args]
        return await self._run(argv, what)

    async def _run(self, argv: list[str], what: str) -> bytes:
        env = {**os.environ, **self.env}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL, env=env)
        except OSError as exc:
            raise EnrollmentError(f"cannot {what}: {argv[0]}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TOOL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise EnrollmentError(f"cannot {what}: {argv[0]} timed out") from None
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip().splitlines()
            raise EnrollmentError(f"cannot {what}: {detail[-1] if detail else proc.returncode}")
        return out


def _spec(pki_dir: Path, address: str, **extra: Any) -> dict[str, Any]:
    names, ips = ["localhost"], ["127.0.0.1", "::1"]
    try:
        ip = str(ipaddress.ip_address(address))
        if ip not in ips:
            ips.append(ip)
    except ValueError:
        names.insert(0, address)
    return {"kind": "local", "pki_dir": str(pki_dir), "names": names, "ips": ips, **extra}


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def dev_host_pid(dev_dir: Path) -> int | None:
    """The PID recorded in a dev host's instance lock file, if a daemon holds it."""
    lock = dev_dir / "run" / "vdsmd.lock"
    try:
        text = lock.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _lock_held(dev_dir: Path) -> bool:
    """Whether a daemon holds DIR's instance lock (the kernel drops it when it exits)."""
    try:
        fd = os.open(dev_dir / "run" / "vdsmd.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def reload_dev_host(dev_dir: Path, python: str, env: dict[str, str]) -> None:
    """Make the ``vdsmd --dev DIR`` recorded in DIR's lock file load its new certificates
    (SIGHUP: no restart, its VMs and connections stay); start it if none runs."""
    pid = dev_host_pid(dev_dir)
    if pid is not None and _lock_held(dev_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
            log.info("asked the dev host daemon in %s (pid %d) to reload", dev_dir, pid)
            return
    await start_dev_host(dev_dir, python, env)


async def start_dev_host(dev_dir: Path, python: str, env: dict[str, str]) -> None:
    """Start ``vdsmd --dev DIR`` detached, on the port its config records, logging to
    ``DIR/vdsmd.log``."""
    log_file = open(dev_dir / "vdsmd.log", "ab")  # noqa: SIM115, ASYNC230 - tiny, handed to the child
    try:
        await asyncio.create_subprocess_exec(
            python, "-m", "vdsm_py.cli.vdsmd", "--dev", str(dev_dir),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            env={**os.environ, **env}, start_new_session=True)
    finally:
        log_file.close()
    log.info("started the dev host daemon in %s", dev_dir)
