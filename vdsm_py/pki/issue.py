"""Making certificates: CAs, host and client certificates, CSRs, and the development PKI.

Host certificates carry both ``serverAuth`` and ``clientAuth`` (VDSM uses one identity for
both roles), a critical KeyUsage, and SANs for host names and IP addresses. Validity is
configurable down to explicit ``not_before``/``not_after`` (tests make expired certificates
this way). Keys are EC P-256 by default (fast), RSA on request. Signing a CSR trusts only
its subject, SANs and public key, never the extensions it asks for. This module builds
objects and writes them through :mod:`vdsm_py.pki.store`; it never checks a deployed
identity (see :mod:`vdsm_py.pki.check`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vdsm_py.pki import store
from vdsm_py.pki.layout import CaPaths, PkiPaths
from vdsm_py.pki.store import SigningKey

log = logging.getLogger("vdsm_py.pki")

KeyType = Literal["ec", "rsa"]
# "host": server and client (VDSM's one identity); "client": clientAuth only; "server".
Purpose = Literal["host", "client", "server"]

DEFAULT_ORG = "vdsm_py"
CA_DAYS = 3650
CERT_DAYS = 825
# Certificates start a little in the past so that a peer whose clock lags still accepts them.
BACKDATE = dt.timedelta(minutes=5)

IPLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: SigningKey


def new_key(key_type: KeyType = "ec", rsa_bits: int = 2048) -> SigningKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise ValueError(f"unknown key type {key_type!r} (use 'ec' or 'rsa')")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _validity(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    start = not_before or (_now() - BACKDATE)
    end = not_after or (start + dt.timedelta(days=days))
    if end <= start:
        raise ValueError(f"certificate would end ({end}) before it starts ({start})")
    return start, end


def _name(common_name: str, organization: str | None) -> x509.Name:
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def subject_alt_names(hostnames: Sequence[str], ips: Sequence[IPLike]) -> list[x509.GeneralName]:
    """SAN entries for DNS names and IP addresses; refuses malformed ones."""
    names: list[x509.GeneralName] = []
    for host in hostnames:
        if not host or not host.isascii() or any(c.isspace() for c in host):
            raise ValueError(f"invalid host name {host!r} (ASCII, no spaces; IDNs as xn--)")
        names.append(x509.DNSName(host))
    for ip in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise ValueError(f"invalid IP address {ip!r}") from None
    return names


def _key_usage(public_key: object, *, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca and isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _extended_usage(purpose: Purpose) -> x509.ExtendedKeyUsage:
    usages = {
        "host": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        "server": [ExtendedKeyUsageOID.SERVER_AUTH],
        "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    }
    if purpose not in usages:
        raise ValueError(f"unknown purpose {purpose!r} (use host, server or client)")
    return x509.ExtendedKeyUsage(usages[purpose])


def create_ca(
    common_name: str = "vdsm_py CA",
    *,
    organization: str | None = DEFAULT_ORG,
    days: int = CA_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: SigningKey | None = None,
    key_type: KeyType = "ec",
) -> Credential:
    """A new self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = key or new_key(key_type)
    start, end = _validity(days, not_before, not_after)
    name = _name(common_name, organization)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(public, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Credential(cert, key)


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _sign_leaf(
    ca: Credential,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    sans: list[x509.GeneralName],
    purpose: Purpose,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(public_key, ca=False), critical=True)
        .add_extension(_extended_usage(purpose), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca.cert), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def issue_cert(
    ca: Credential,
    common_name: str | None = None,
    *,
    hostnames: Sequence[str] = (),
    ips: Sequence[IPLike] = (),
    purpose: Purpose = "host",
    organization: str | None = DEFAULT_ORG,
    days: int = CERT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: SigningKey | None = None,
    key_type: KeyType = "ec",
) -> Credential:
    """A new key (unless given) and a certificate for it signed by ``ca``.

    ``common_name`` defaults to the first host name, then the first IP address.
    """
    sans = subject_alt_names(hostnames, ips)
    common_name = common_name or next(iter([*hostnames, *map(str, ips)]), None)
    if not common_name:
        raise ValueError("a certificate needs a common name, a host name or an IP address")
    key = key or new_key(key_type)
    start, end = _validity(days, not_before, not_after)
    cert = _sign_leaf(
        ca, _name(common_name, organization), key.public_key(), sans, purpose, start, end
    )
    return Credential(cert, key)


def make_csr(
    key: SigningKey,
    hostnames: Sequence[str] = (),
    ips: Sequence[IPLike] = (),
    *,
    common_name: str | None = None,
    organization: str | None = DEFAULT_ORG,
) -> x509.CertificateSigningRequest:
    """A certificate request for ``key`` naming the host (enrolment: the key never leaves)."""
    sans = subject_alt_names(hostnames, ips)
    common_name = common_name or next(iter([*hostnames, *map(str, ips)]), None)
    if not common_name:
        raise ValueError("a request needs a common name, a host name or an IP address")
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, organization))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def sign_csr(
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    csr: x509.CertificateSigningRequest,
    days: int = CERT_DAYS,
    *,
    purpose: Purpose = "host",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign a CSR: its subject, SANs and key are kept; usages and CA flags are ours."""
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature is invalid")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(  # noqa: TRY004 - a bad request, reported like the others
            f"unsupported key type in request: {type(public_key).__name__}"
        )
    try:
        sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    if not csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) and not sans:
        raise ValueError("the certificate request names no host (no CN, no SAN)")
    start, end = _validity(days, not_before, not_after)
    return _sign_leaf(
        Credential(ca_cert, ca_key), csr.subject, public_key, sans, purpose, start, end
    )


# --- files --------------------------------------------------------------------------------


def write_ca(paths: CaPaths, ca: Credential) -> None:
    """Store a CA: the key first (0600 in a 0700 dir), then the certificate."""
    store.ensure_dir(paths.root, store.PUBLIC_DIR_MODE)
    store.write_key(paths.key, ca.key)
    store.write_cert(paths.cert, ca.cert)


def load_ca(paths: CaPaths) -> Credential:
    """A stored CA; PkiError names the file that is missing or bad."""
    cert = store.read_cert("CA certificate", paths.cert)
    key = store.read_key("CA key", paths.key)
    if not _same_public_key(cert, key):
        raise store.PkiError("CA key", paths.key, f"does not match the certificate {paths.cert}")
    return Credential(cert, key)


def write_identity(paths: PkiPaths, cred: Credential, ca_cert: x509.Certificate) -> None:
    """Install an identity in VDSM's layout: CA certificate, key, then certificate."""
    store.ensure_dir(paths.root, store.PUBLIC_DIR_MODE)
    store.write_cert(paths.cacert, ca_cert)
    store.write_key(paths.key, cred.key)
    store.write_cert(paths.cert, cred.cert)


def _same_public_key(cert: x509.Certificate, key: SigningKey) -> bool:
    return cert.public_key() == key.public_key()


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialize PKI creation under ``root`` between processes."""
    store.ensure_dir(root, store.PUBLIC_DIR_MODE)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def dev_ca_paths(root: Path) -> CaPaths:
    """Where a development PKI rooted at ``root`` keeps its CA."""
    return CaPaths(root / "ca")


def ensure_dev_pki(root: Path, hostnames: Sequence[str], ips: Sequence[IPLike]) -> PkiPaths:
    """A development PKI under ``root``: a CA (``root/ca``) and a host identity in VDSM's
    layout, each created only if missing; an existing host certificate that has expired
    and was issued by this CA is renewed. Safe to call concurrently and repeatedly."""
    paths = PkiPaths(root)
    ca_paths = dev_ca_paths(root)
    with _locked(root):
        if ca_paths.cert.exists() or ca_paths.key.exists():
            ca = load_ca(ca_paths)
        else:
            ca = create_ca("vdsm_py development CA")
            write_ca(ca_paths, ca)
            log.info("Created development CA in %s", ca_paths.root)
        if not paths.cacert.exists():
            store.write_cert(paths.cacert, ca.cert)
        if paths.cert.exists() and paths.key.exists():
            if not _expired_from(paths.cert, ca):
                return paths
            log.warning("Development host certificate %s has expired; renewing it", paths.cert)
        elif paths.cert.exists() or paths.key.exists():
            log.warning(
                "Incomplete host identity in %s; issuing a new key and certificate", paths.root
            )
        cred = issue_cert(ca, hostnames=hostnames, ips=ips, purpose="host")
        store.write_key(paths.key, cred.key)
        store.write_cert(paths.cert, cred.cert)
        log.info(
            "Issued development host certificate %s for %s",
            paths.cert,
            ", ".join([*hostnames, *map(str, ips)]),
        )
    return paths


def _expired_from(cert_path: Path, ca: Credential) -> bool:
    """True if the certificate at ``cert_path`` was issued by ``ca`` and has expired."""
    cert = store.read_cert("host certificate", cert_path)
    if cert.issuer != ca.cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc <= _now()
