"""TLS contexts for mutual TLS between the daemon and its clients, and peer identity.

The server requires a client certificate signed by the configured CA (VDSM's model: only
the engine and other hosts of the cluster hold one). The client presents its certificate
and verifies the server against the CA, without a host-name check by default, as VDSM's
client does. TLS 1.2 is the minimum. This module does no socket I/O and reads only the
files it is given; checking that they are sane is :mod:`vdsm_py.pki.check`'s job.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from vdsm_py.pki.layout import PkiPaths
from vdsm_py.pki.store import PkiError


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def server_context(paths: PkiPaths) -> ssl.SSLContext:
    """The daemon's context: its own identity, client certificates required and verified.

    Files OpenSSL cannot load raise :class:`PkiError` (run ``check_identity`` first for a
    precise diagnosis).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(paths.cacert))
    except (ssl.SSLError, OSError) as exc:
        raise PkiError("CA certificate", paths.cacert, f"cannot be loaded by TLS: {exc}") from None
    try:
        ctx.load_cert_chain(certfile=str(paths.cert), keyfile=str(paths.key))
    except (ssl.SSLError, OSError) as exc:
        raise PkiError(
            "host certificate", paths.cert, f"cannot be loaded by TLS with key {paths.key}: {exc}"
        ) from None
    return ctx


def client_context(
    cert: Path, key: Path, cafile: Path, *, check_hostname: bool = False
) -> ssl.SSLContext:
    """A client's context: presents ``cert``/``key``, trusts servers signed by ``cafile``.

    Unloadable files raise ``ssl.SSLError``/``OSError`` as the ``ssl`` module does.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(cafile))
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return ctx


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The subject CN of the peer's certificate (for logs), or None when there is none.

    Works with asyncio's ``writer.get_extra_info("ssl_object")``.
    """
    if ssl_object is None:
        return None
    info: dict[str, Any] | None = ssl_object.getpeercert()
    if info and "subject" in info:
        for rdn in info["subject"]:
            for name, value in rdn:
                if name == "commonName":
                    return str(value)
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


class ReloadableServerContext:
    """The listener's TLS context, whose identity and trusted CA can change in place.

    Certificates are renewed (and an engine may replace the trusted CA) while the daemon
    runs: :meth:`reload` builds a new context from the PKI directory, and OpenSSL's
    server-name callback, which runs for every handshake (with or without SNI) before the
    certificate is sent and the client's is verified, hands each new connection the current
    one. Connections already established keep the context they were made with.
    """

    def __init__(self, paths: PkiPaths) -> None:
        self.paths = paths
        self.current = server_context(paths)
        self.listener = self.current
        self.listener.sni_callback = self._select

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: Any) -> None:
        if ssl_object.context is not self.current:
            ssl_object.context = self.current

    def reload(self) -> None:
        """Load the PKI directory again; on PkiError the previous context stays in use."""
        from vdsm_py.pki.check import check_identity

        check_identity(self.paths)
        self.current = server_context(self.paths)
