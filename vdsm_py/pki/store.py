"""PEM files on disk: atomic writes with safe modes, and reads that name the bad file.

Keys are written 0600 in 0700 directories, certificates 0644 in 0755 directories; every
write goes to a temporary file in the same directory, is fsynced and renamed into place, so
a crash never leaves half a key. Reads raise :class:`PkiError` saying which file is wrong
and how (missing, unreadable, not PEM). Nothing here decides what a certificate should
contain or whether it is valid (see :mod:`vdsm_py.pki.issue` and :mod:`vdsm_py.pki.check`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# The key kinds we issue and accept for TLS identities.
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

KEY_MODE = 0o600
CERT_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
PUBLIC_DIR_MODE = 0o755


class PkiError(Exception):
    """A PKI file is missing, unreadable, malformed or not usable; names the file."""

    def __init__(self, what: str, path: Path | None, problem: str) -> None:
        self.what = what
        self.path = path
        self.problem = problem
        where = f"{what} {path}" if path is not None else what
        super().__init__(f"{where}: {problem}")


def ensure_dir(path: Path, mode: int) -> None:
    """Create ``path`` (and parents) if missing; a directory we create gets exactly ``mode``.

    Existing directories keep their mode: an administrator's choice is not overridden.
    """
    if path.is_dir():
        return
    ensure_dir(path.parent, PUBLIC_DIR_MODE)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
        os.chmod(path, mode)  # mkdir's mode is filtered by the umask


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``: temp file → fsync → rename → fsync dir."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_key(path: Path, key: SigningKey) -> None:
    """Write an unencrypted private key, readable by its owner only."""
    ensure_dir(path.parent, PRIVATE_DIR_MODE)
    atomic_write(path, key_pem(key), KEY_MODE)


def write_cert(path: Path, *certs: x509.Certificate) -> None:
    """Write one certificate (or a bundle), world-readable."""
    ensure_dir(path.parent, PUBLIC_DIR_MODE)
    atomic_write(path, cert_pem(*certs), CERT_MODE)


def write_csr(path: Path, csr: x509.CertificateSigningRequest) -> None:
    ensure_dir(path.parent, PUBLIC_DIR_MODE)
    atomic_write(path, csr.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def read_bytes(what: str, path: Path) -> bytes:
    """The content of ``path``, or a PkiError saying it is missing or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(what, path, "missing (no such file)") from None
    except IsADirectoryError:
        raise PkiError(what, path, "is a directory, expected a PEM file") from None
    except PermissionError:
        raise PkiError(what, path, f"unreadable by this user (uid {os.getuid()})") from None
    except OSError as exc:
        raise PkiError(what, path, f"unreadable: {exc.strerror or exc}") from None


def read_certs(what: str, path: Path) -> list[x509.Certificate]:
    """All certificates in a PEM file (a CA file may be a bundle); at least one."""
    data = read_bytes(what, path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise PkiError(what, path, "not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(what, path, f"not a valid PEM certificate: {exc}") from None
    return certs


def read_cert(what: str, path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (the leaf, when the file holds a chain)."""
    return read_certs(what, path)[0]


def read_key(what: str, path: Path) -> SigningKey:
    """An unencrypted EC or RSA private key from a PEM file."""
    data = read_bytes(what, path)
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise PkiError(what, path, "not a PEM private key (no BEGIN ... PRIVATE KEY block)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PkiError(
            what, path, "is encrypted with a passphrase; the daemon needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(what, path, f"not a valid PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(what, path, f"unsupported key type {type(key).__name__} (use EC or RSA)")
    return key


def read_csr(what: str, path: Path) -> x509.CertificateSigningRequest:
    data = read_bytes(what, path)
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise PkiError(what, path, f"not a valid PEM certificate request: {exc}") from None
