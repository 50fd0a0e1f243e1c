"""Where ``vdsm-client`` connects and with which identity; the call and the event watch.

Owns: choosing host, port and certificates from the command line (defaults: localhost,
54321, VDSM's PKI layout under ``/etc/pki/vdsm``, where the host's own certificate also
serves as a client identity, as VDSM does; ``--dev DIR`` reads a development host's PKI and
address from DIR), building the TLS context, and turning every way of failing to reach the
host into a :class:`ConnectError` with a message an admin can act on.

Must not: parse parameters or format output. The protocol itself is the client library's
(:mod:`vdsm_py.client`).
"""

from __future__ import annotations

import argparse
import configparser
import os
import socket
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdsm_py.client import RpcError, SyncClient
from vdsm_py.devhost import CONF_NAME
from vdsm_py.pki.layout import PkiPaths

__all__ = [
    "ConnectError",
    "RpcError",
    "Target",
    "TargetError",
    "call",
    "resolve_target",
    "watch_events",
]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 54321
DEFAULT_PKI_DIR = Path("/etc/pki/vdsm")
_WILDCARDS = ("", "::", "0.0.0.0", "*")


class TargetError(Exception):
    """The command line names no usable host or identity (a usage error)."""


class ConnectError(Exception):
    """The host could not be reached, or refused us, or went away; the message says how."""


@dataclass(frozen=True)
class Target:
    """Where to connect and, unless plaintext, with which certificates."""

    host: str
    port: int
    cert: Path | None = None
    key: Path | None = None
    cacert: Path | None = None

    @property
    def insecure(self) -> bool:
        return self.cert is None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def resolve_target(args: argparse.Namespace) -> Target:
    """Host, port and certificate files from ``-a/-p/--pki-dir/--cert.../--dev/--insecure``."""
    host, port, pki_dir = args.host, args.port, args.pki_dir
    if args.dev:
        root = Path(args.dev)
        if not root.is_dir():
            raise TargetError(f"--dev {root}: no such directory (start 'vdsmd --dev {root}')")
        dev_host, dev_port = _dev_address(root)
        host = host or dev_host
        port = port or dev_port
        pki_dir = pki_dir or str(root / "pki")
    host = host or DEFAULT_HOST
    port = port or DEFAULT_PORT
    if not 0 < port < 65536:
        raise TargetError(f"port {port} out of range")
    files = (args.cert, args.key, args.cacert)
    if args.insecure:
        if any(files) or args.pki_dir:
            raise TargetError(
                "--insecure uses no certificates; drop --pki-dir/--cert/--key/--cacert"
            )
        return Target(host, port)
    if any(files):
        if not all(files):
            raise TargetError("--cert, --key and --cacert go together")
        if args.pki_dir:
            raise TargetError("give either --pki-dir or --cert/--key/--cacert")
        return Target(host, port, Path(args.cert), Path(args.key), Path(args.cacert))
    paths = PkiPaths(Path(pki_dir) if pki_dir else DEFAULT_PKI_DIR)
    return Target(host, port, Path(paths.cert), Path(paths.key), Path(paths.cacert))


def _dev_address(root: Path) -> tuple[str | None, int | None]:
    """The address a ``vdsmd --dev`` host at ``root`` listens on, from its config file."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(root / CONF_NAME, encoding="utf-8")
        host = parser.get("addresses", "host", fallback=None)
        port = parser.getint("addresses", "port", fallback=None)
    except (configparser.Error, ValueError) as exc:
        raise TargetError(f"{root / CONF_NAME}: cannot read the address: {exc}") from None
    return (None if host is None or host.strip() in _WILDCARDS else host.strip()), port


def ssl_context(target: Target) -> ssl.SSLContext | None:
    """The client TLS context for ``target``, or None for ``--insecure``."""
    if target.insecure:
        return None
    from vdsm_py.transport.tls import client_context

    assert target.cert and target.key and target.cacert
    for what, path in (
        ("CA certificate", target.cacert),
        ("client certificate", target.cert),
        ("client key", target.key),
    ):
        if not path.is_file():
            raise ConnectError(
                f"{what} {path} does not exist (use --pki-dir, --dev or --cert/--key/--cacert)"
            )
        if not os.access(path, os.R_OK):
            raise ConnectError(f"{what} {path} is not readable by this user")
    try:
        return client_context(target.cert, target.key, target.cacert)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise ConnectError(
            f"cannot load the client identity ({target.cert}, {target.key}, {target.cacert}): {exc}"
        ) from None


def _describe(target: Target, exc: BaseException, timeout: float, *, connecting: bool) -> str:
    """An admin's reading of a transport failure, with the likely cause when we know it."""
    where = target.address
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused (is vdsmd running there?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {target.host}: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS with {where} failed: the host's certificate is not trusted: "
            f"{exc.verify_message} (check --cacert / --pki-dir)"
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return (
            f"TLS with {where} failed: {reason} (the host may not accept our certificate "
            f"{target.cert}, or may not speak TLS)"
        )
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {timeout:g} s"
    if isinstance(exc, (ConnectionError, EOFError)) and connecting:
        if target.insecure:
            cause = "it probably requires TLS (run without --insecure)"
        else:
            cause = (
                f"it probably does not accept our certificate {target.cert} (signed by "
                "another CA, expired, or revoked)"
            )
        return f"{where} closed the connection while we were connecting: {cause} [{exc}]"
    if isinstance(exc, (ConnectionError, EOFError)):
        return f"connection to {where} lost before the answer: {exc or type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"cannot talk to {where}: {exc.strerror or exc}"
    return f"cannot talk to {where}: {exc}"


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError)


def _connect(target: Target, timeout: float) -> SyncClient:
    context = ssl_context(target)
    client = SyncClient()
    try:
        client.connect(target.host, target.port, ssl_context=context, timeout=timeout)
    except _NETWORK_ERRORS as exc:
        client.close()
        raise ConnectError(_describe(target, exc, timeout, connecting=True)) from None
    return client


def call(
    target: Target,
    method: str,
    params: dict[str, Any],
    *,
    timeout: float,
    flow_id: str | None = None,
) -> Any:
    """Call one verb; RpcError when the host answers with an error, ConnectError else."""
    client = _connect(target, timeout)
    try:
        return client.call(method, params, timeout=timeout, flow_id=flow_id)
    except _NETWORK_ERRORS as exc:
        raise ConnectError(_describe(target, exc, timeout, connecting=False)) from None
    finally:
        client.close()


def watch_events(
    target: Target, *, timeout: float, count: int | None = None
) -> Generator[tuple[str, Any], None, None]:
    """Yield ``(method, params)`` of each event the host sends, ``count`` of them or forever."""
    client = _connect(target, timeout)
    try:
        for seen, (method, params) in enumerate(client.events(), start=1):
            yield method, params
            if count is not None and seen >= count:
                return
    except _NETWORK_ERRORS as exc:
        raise ConnectError(_describe(target, exc, timeout, connecting=False)) from None
    finally:
        client.close()
