"""Readable facts about a certificate (subject, SANs, usages, expiry) for people and JSON.

Pure description: no checks that raise, no file access.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    serial: str
    sans: list[str]
    usages: list[str]
    is_ca: bool
    key: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    fingerprint_sha256: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["not_before"] = self.not_before.isoformat()
        data["not_after"] = self.not_after.isoformat()
        return data


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)] + [
        f"IP:{n}" for n in ext.get_values_for_type(x509.IPAddress)
    ]


def _usages(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in ext]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def describe(cert: x509.Certificate, now: dt.datetime | None = None) -> CertInfo:
    now = now or dt.datetime.now(dt.UTC)
    end = cert.not_valid_after_utc
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:x}",
        sans=_sans(cert),
        usages=_usages(cert),
        is_ca=_is_ca(cert),
        key=_key(cert),
        not_before=cert.not_valid_before_utc,
        not_after=end,
        days_left=(end - now).days,  # floor: -1 once expired
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":"),
    )
