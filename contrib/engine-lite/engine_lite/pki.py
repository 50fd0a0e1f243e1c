"""The engine's PKI: its CA, its own client identity, signing host requests, checking peers.

The CA lives in ``STATE_DIR/ca`` (``cacert.pem``, ``private/cakey.pem``), the engine's client
certificate in VDSM's layout under ``STATE_DIR/pki``. Hosts are enrolled by signing their
CSR (their key never comes here). The client context trusts only the engine CA, so a host
presenting a certificate from any other CA fails the handshake; :func:`serial_of` lets the
engine also check that the host presents the very certificate it was issued. Built on
:mod:`vdsm_py.pki`; no socket I/O here.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from engine_lite.errors import EnrollmentError
from vdsm_py.pki import store
from vdsm_py.pki.issue import (
    Credential,
    create_ca,
    issue_cert,
    load_ca,
    sign_csr,
    write_ca,
    write_identity,
)
from vdsm_py.pki.layout import CaPaths, PkiPaths
from vdsm_py.transport.tls import client_context

log = logging.getLogger("engine_lite.pki")

ENGINE_CN = "engine-lite"


@dataclass(frozen=True)
class SignedHost:
    cert_pem: bytes
    cacert_pem: bytes
    serial: str
    not_after: str  # ISO 8601 UTC


class EngineCa:
    """The engine CA and identity under ``ca_dir`` / ``identity_dir`` (created if missing)."""

    def __init__(self, ca_dir: Path, identity_dir: Path) -> None:
        self.ca_paths = CaPaths(ca_dir)
        self.identity = PkiPaths(identity_dir)
        self._ca: Credential | None = None

    def ensure(self) -> None:
        if self.ca_paths.cert.exists() or self.ca_paths.key.exists():
            self._ca = load_ca(self.ca_paths)
        else:
            self._ca = create_ca("engine-lite CA")
            write_ca(self.ca_paths, self._ca)
            log.info("created the engine CA in %s", self.ca_paths.root)
        if not (self.identity.cert.exists() and self.identity.key.exists()) or \
                not self._identity_fresh():
            cred = issue_cert(self._ca, ENGINE_CN, purpose="client")
            write_identity(self.identity, cred, self._ca.cert)
            log.info("issued the engine's client certificate in %s", self.identity.root)

    def _identity_fresh(self) -> bool:
        cert = store.read_cert("engine certificate", self.identity.cert)
        assert self._ca is not None
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        return cert.issuer == self._ca.cert.subject and cert.not_valid_after_utc > soon

    @property
    def ca(self) -> Credential:
        if self._ca is None:
            self.ensure()
        assert self._ca is not None
        return self._ca

    @property
    def cacert_pem(self) -> bytes:
        return store.cert_pem(self.ca.cert)

    def sign_host(self, csr_pem: bytes, days: int) -> SignedHost:
        """Sign a host's CSR as a host certificate (server + client use)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            cert = sign_csr(self.ca.cert, self.ca.key, csr, days, purpose="host")
        except ValueError as exc:
            raise EnrollmentError(f"the host's certificate request is not acceptable: {exc}") \
                from None
        return SignedHost(
            store.cert_pem(cert), self.cacert_pem, serial_text(cert.serial_number),
            cert.not_valid_after_utc.isoformat(),
        )

    def client_context(self) -> ssl.SSLContext:
        """Presents the engine's certificate; trusts only servers signed by the engine CA."""
        self.ensure()
        return client_context(self.identity.cert, self.identity.key, self.ca_paths.cert)


def serial_text(serial: int) -> str:
    return format(serial, "x")


def serial_of(der: bytes) -> str:
    return serial_text(x509.load_der_x509_certificate(der).serial_number)


def needs_renewal(not_after_iso: str, renew_before_days: float,
                  now: dt.datetime | None = None) -> bool:
    if not not_after_iso:
        return False
    not_after = dt.datetime.fromisoformat(not_after_iso)
    now = now or dt.datetime.now(dt.UTC)
    return not_after - now <= dt.timedelta(days=renew_before_days)
