"""Fixtures shared by unit and integration tests.

``pki``: one set of real certificates per test session (EC keys, so it is fast): a host
identity in VDSM's layout for 127.0.0.1/localhost, a client signed by the same CA, a
client signed by another CA, and an expired client signed by the right CA.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from vdsm_py.pki import store
from vdsm_py.pki.issue import Credential, create_ca, issue_cert, write_ca, write_identity
from vdsm_py.pki.layout import CaPaths, PkiPaths
from vdsm_py.transport.tls import client_context, server_context

ClientKind = Literal["good", "foreign", "expired"]


@dataclass(frozen=True)
class PkiSet:
    """Certificates for TLS tests; every file is real PEM on disk."""

    ca_dir: PkiPaths  # CA cert + host cert/key for 127.0.0.1, ::1 and localhost
    ca: Credential  # the CA that signed ca_dir's host certificate (to issue more)
    ca_paths: CaPaths  # the same CA on disk
    client_cert: Path
    client_key: Path
    foreign_cert: Path  # signed by another CA
    foreign_key: Path
    expired_cert: Path  # signed by the right CA, expired yesterday
    expired_key: Path
    foreign_ca: Credential  # the other CA
    foreign_cacert: Path  # its certificate on disk

    def client_files(self, kind: ClientKind = "good") -> tuple[Path, Path]:
        files = {
            "good": (self.client_cert, self.client_key),
            "foreign": (self.foreign_cert, self.foreign_key),
            "expired": (self.expired_cert, self.expired_key),
        }
        return files[kind]

    def client_context(self, kind: ClientKind = "good") -> ssl.SSLContext:
        """A client context presenting the ``kind`` certificate and trusting our CA."""
        cert, key = self.client_files(kind)
        return client_context(cert, key, self.ca_dir.cacert)

    def server_context(self) -> ssl.SSLContext:
        return server_context(self.ca_dir)


def _write_client(root: Path, cred: Credential) -> tuple[Path, Path]:
    cert, key = root / "cert.pem", root / "key.pem"
    store.write_key(key, cred.key)
    store.write_cert(cert, cred.cert)
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiSet:
    root = tmp_path_factory.mktemp("pki")
    ca = create_ca("vdsm_py test CA")
    ca_paths = CaPaths(root / "ca")
    write_ca(ca_paths, ca)
    host = issue_cert(ca, hostnames=["localhost"], ips=["127.0.0.1", "::1"])
    ca_dir = PkiPaths(root / "host")
    write_identity(ca_dir, host, ca.cert)

    client_cert, client_key = _write_client(
        root / "client", issue_cert(ca, "test-client", purpose="client")
    )
    foreign_ca = create_ca("some other CA")
    foreign_cacert = root / "foreign-ca" / "cacert.pem"
    store.write_cert(foreign_cacert, foreign_ca.cert)
    foreign_cert, foreign_key = _write_client(
        root / "foreign", issue_cert(foreign_ca, "foreign-client", purpose="client")
    )
    now = dt.datetime.now(dt.UTC)
    expired = issue_cert(
        ca,
        "expired-client",
        purpose="client",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    expired_cert, expired_key = _write_client(root / "expired", expired)
    return PkiSet(
        ca_dir=ca_dir,
        ca=ca,
        ca_paths=ca_paths,
        client_cert=client_cert,
        client_key=client_key,
        foreign_cert=foreign_cert,
        foreign_key=foreign_key,
        expired_cert=expired_cert,
        expired_key=expired_key,
        foreign_ca=foreign_ca,
        foreign_cacert=foreign_cacert,
    )
