"""Is an identity usable? ``check_identity`` runs before the daemon listens.

It names exactly which file is wrong and why: missing, unreadable, not PEM, expired or not
yet valid (with the dates), a key that does not belong to the certificate, a certificate
not signed by the configured CA. It logs a warning when the certificate expires soon.
It never repairs anything and never builds TLS contexts.
"""

from __future__ import annotations

import datetime as dt
import logging
import stat
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from vdsm_py.pki import store
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.pki.store import PkiError, SigningKey

__all__ = ["PkiError", "check_identity", "check_key_matches", "check_signed_by", "check_validity"]

log = logging.getLogger("vdsm_py.pki")

# Warn when the host certificate has less than this left.
EXPIRY_WARNING = dt.timedelta(days=30)


def _fmt(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_validity(
    what: str, path: Path, cert: x509.Certificate, now: dt.datetime | None = None
) -> None:
    """Refuse a certificate outside its validity period, giving the dates."""
    now = now or dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        raise PkiError(
            what,
            path,
            f"not valid yet: valid from {_fmt(start)}, it is now {_fmt(now)} (check the clock)",
        )
    if now >= end:
        raise PkiError(
            what, path, f"expired on {_fmt(end)} (valid from {_fmt(start)}, it is now {_fmt(now)})"
        )


def check_key_matches(
    key_path: Path, key: SigningKey, cert_path: Path, cert: x509.Certificate
) -> None:
    if cert.public_key() != key.public_key():
        raise PkiError("private key", key_path, f"does not match the certificate {cert_path}")


def check_signed_by(
    what: str, path: Path, cert: x509.Certificate, ca_path: Path, cas: list[x509.Certificate]
) -> x509.Certificate:
    """The CA of ``cas`` that signed ``cert``, or a PkiError saying none did."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    issuer = cert.issuer.rfc4514_string()
    known = "; ".join(ca.subject.rfc4514_string() for ca in cas)
    raise PkiError(
        what, path, f"is not signed by the CA in {ca_path} (issuer {issuer!r}, CA {known!r})"
    )


def _warn_if_exposed(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning(
            "Private key %s is accessible to other users (mode %o); use 0600",
            path,
            stat.S_IMODE(mode),
        )


def check_identity(paths: PkiPaths, now: dt.datetime | None = None) -> None:
    """Raise PkiError unless ``paths`` holds a usable identity for TLS.

    Checked in order: the CA certificate, the host certificate and the key can be read
    and parsed; the CA and host certificates are within their validity; the key belongs
    to the host certificate; the host certificate is signed by (one of) the CA(s).
    """
    now = now or dt.datetime.now(dt.UTC)
    cas = store.read_certs("CA certificate", paths.cacert)
    cert = store.read_cert("host certificate", paths.cert)
    key = store.read_key("private key", paths.key)
    _warn_if_exposed(paths.key)
    for ca in cas:
        check_validity("CA certificate", paths.cacert, ca, now)
    check_validity("host certificate", paths.cert, cert, now)
    check_key_matches(paths.key, key, paths.cert, cert)
    check_signed_by("host certificate", paths.cert, cert, paths.cacert, cas)
    left = cert.not_valid_after_utc - now
    if left < EXPIRY_WARNING:
        log.warning(
            "Host certificate %s expires in %d days (%s)",
            paths.cert,
            left.days,
            _fmt(cert.not_valid_after_utc),
        )
