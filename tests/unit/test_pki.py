"""Issuing, storing and checking certificates (vdsm_py.pki), with real keys and files."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import PkiSet
from vdsm_py.pki import store
from vdsm_py.pki.check import PkiError, check_identity
from vdsm_py.pki.info import describe
from vdsm_py.pki.issue import (
    Credential,
    create_ca,
    dev_ca_paths,
    ensure_dev_pki,
    issue_cert,
    load_ca,
    make_csr,
    new_key,
    sign_csr,
    write_ca,
    write_identity,
)
from vdsm_py.pki.layout import PkiPaths

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def ca() -> Credential:
    return create_ca("unit CA")


@pytest.fixture
def identity(tmp_path: Path, ca: Credential) -> PkiPaths:
    paths = PkiPaths(tmp_path / "pki")
    write_identity(paths, issue_cert(ca, hostnames=["h1"], ips=["192.0.2.1"]), ca.cert)
    return paths


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


# --- issuing ------------------------------------------------------------------------------


def test_host_certificate_serves_as_server_and_client_with_names(ca: Credential) -> None:
    cred = issue_cert(ca, hostnames=["h1.example", "h1"], ips=["192.0.2.7", "2001:db8::7"])
    cert = cred.cert
    cert.verify_directly_issued_by(ca.cert)
    assert cert.public_key() == cred.key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "h1.example"
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert describe(cert).sans == ["DNS:h1.example", "DNS:h1", "IP:192.0.2.7", "IP:2001:db8::7"]


def test_client_certificate_is_client_only(ca: Credential) -> None:
    cert = issue_cert(ca, "engine", purpose="client").cert
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)


def test_ca_may_sign_leaves_only(ca: Credential) -> None:
    constraints = _ext(ca.cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert _ext(ca.cert, x509.KeyUsage).value.key_cert_sign


def test_rsa_keys_get_key_encipherment(ca: Credential) -> None:
    cred = issue_cert(ca, "rsa-host", key=new_key("rsa"))
    assert _ext(cred.cert, x509.KeyUsage).value.key_encipherment
    assert describe(cred.cert).key == "RSA 2048"


def test_common_name_falls_back_to_first_ip(ca: Credential) -> None:
    cert = issue_cert(ca, ips=["192.0.2.9"]).cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "192.0.2.9"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ips": ["999.1.1.1"]}, "invalid IP address"),
        ({"hostnames": ["bad name"]}, "invalid host name"),
        ({"hostnames": ["hôte"]}, "invalid host name"),
        ({}, "needs a common name"),
        ({"hostnames": ["h"], "not_before": NOW, "not_after": NOW}, "before it starts"),
    ],
)
def test_bad_requests_are_refused(ca: Credential, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        issue_cert(ca, **kwargs)


def test_explicit_validity_makes_expired_certificates(ca: Credential) -> None:
    cert = issue_cert(
        ca, "old", not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=2)
    ).cert
    assert cert.not_valid_after_utc < NOW
    assert describe(cert).days_left < 0
    end = cert.not_valid_after_utc
    assert describe(cert, now=end - dt.timedelta(hours=1)).days_left == 0
    assert describe(cert, now=end + dt.timedelta(hours=1)).days_left == -1


def test_csr_enrolment_keeps_key_and_names(ca: Credential) -> None:
    key = new_key()
    csr = make_csr(key, ["h2.example"], ["192.0.2.2"])
    cert = sign_csr(ca.cert, ca.key, csr, days=30)
    cert.verify_directly_issued_by(ca.cert)
    assert cert.public_key() == key.public_key()
    assert cert.subject == csr.subject
    assert describe(cert).sans == ["DNS:h2.example", "IP:192.0.2.2"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30


def test_signing_a_csr_ignores_the_extensions_it_asks_for(ca: Credential) -> None:
    key = new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sneaky")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = sign_csr(ca.cert, ca.key, csr)
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert not _ext(cert, x509.KeyUsage).value.key_cert_sign


def test_csr_naming_no_host_is_refused(ca: Credential) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(new_key(), hashes.SHA256())
    )
    with pytest.raises(ValueError, match="names no host"):
        sign_csr(ca.cert, ca.key, csr)


# --- files and permissions ----------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_files_get_safe_modes(identity: PkiPaths) -> None:
    assert _mode(identity.key) == 0o600
    assert _mode(identity.keys_dir) == 0o700
    assert _mode(identity.cert) == 0o644
    assert _mode(identity.cacert) == 0o644
    assert _mode(identity.certs_dir) == 0o755


def test_ca_key_is_private(tmp_path: Path, ca: Credential) -> None:
    paths = dev_ca_paths(tmp_path)
    write_ca(paths, ca)
    assert _mode(paths.key) == 0o600
    assert _mode(paths.private_dir) == 0o700


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.pem"
    store.atomic_write(target, b"one", 0o644)
    store.atomic_write(target, b"two", 0o600)
    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.pem"]


def test_existing_directory_mode_is_respected(tmp_path: Path, ca: Credential) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    os.chmod(keys, 0o750)
    store.write_key(keys / "k.pem", ca.key)
    assert _mode(keys) == 0o750


# --- check_identity -----------------------------------------------------------------------


def _problem(paths: PkiPaths, now: dt.datetime | None = None) -> PkiError:
    with pytest.raises(PkiError) as info:
        check_identity(paths, now)
    return info.value


def test_good_identity_passes(identity: PkiPaths) -> None:
    check_identity(identity)


@pytest.mark.parametrize("which", ["cacert", "cert", "key"])
def test_missing_file_is_named(identity: PkiPaths, which: str) -> None:
    path: Path = getattr(identity, which)
    path.unlink()
    err = _problem(identity)
    assert err.path == path and "missing" in str(err) and str(path) in str(err)


@pytest.mark.parametrize(
    "which, message",
    [
        ("cacert", "not a PEM certificate"),
        ("cert", "not a PEM certificate"),
        ("key", "not a PEM private key"),
    ],
)
def test_garbage_file_is_named(identity: PkiPaths, which: str, message: str) -> None:
    path: Path = getattr(identity, which)
    path.write_bytes(b"hello, I am not PEM\n")
    err = _problem(identity)
    assert err.path == path and message in str(err)


def test_truncated_certificate_is_named(identity: PkiPaths) -> None:
    pem = identity.cert.read_bytes()
    identity.cert.write_bytes(pem[:60] + pem[-30:])
    err = _problem(identity)
    assert err.path == identity.cert and "not a valid PEM certificate" in str(err)


def test_directory_in_place_of_a_file_is_named(identity: PkiPaths) -> None:
    identity.cert.unlink()
    identity.cert.mkdir()
    assert "is a directory" in str(_problem(identity))


def test_encrypted_key_is_named(identity: PkiPaths) -> None:
    key = store.read_key("k", identity.key)
    identity.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    err = _problem(identity)
    assert err.path == identity.key and "encrypted" in str(err)


@pytest.fixture
def world_visible_tmp() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="vdsm_py-pki-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unreadable_key_is_named(world_visible_tmp: Path, ca: Credential) -> None:
    paths = PkiPaths(world_visible_tmp / "pki")
    write_identity(paths, issue_cert(ca, "h"), ca.cert)
    os.chmod(paths.keys_dir, 0o755)  # the key file itself (0600) is what must be unreadable
    if os.geteuid() != 0:
        os.chmod(paths.key, 0o000)
        assert "unreadable" in str(_problem(paths))
        return
    # root reads everything: check as an unprivileged user, for real.
    code = (
        "import sys; from pathlib import Path; from vdsm_py.pki.check import check_identity, "
        "PkiError; from vdsm_py.pki.layout import PkiPaths\n"
        "try: check_identity(PkiPaths(Path(sys.argv[1])))\n"
        "except PkiError as e: print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(paths.root)],
        cwd=REPO,
        user=65534,
        group=65534,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"private key {paths.key}: unreadable" in out


def test_expired_certificate_is_named_with_dates(identity: PkiPaths) -> None:
    cert = store.read_cert("c", identity.cert)
    later = cert.not_valid_after_utc + dt.timedelta(days=1)
    err = _problem(identity, now=later)
    assert err.path == identity.cert and err.what == "host certificate"
    assert f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" in str(err)
    assert f"it is now {later:%Y-%m-%d %H:%M:%S} UTC" in str(err)


def test_expired_host_certificate_with_valid_ca(tmp_path: Path, ca: Credential) -> None:
    paths = PkiPaths(tmp_path)
    old = issue_cert(
        ca, "h", not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
    )
    write_identity(paths, old, ca.cert)
    err = _problem(paths)
    assert err.path == paths.cert and "expired on" in str(err)


def test_expired_ca_is_named(tmp_path: Path) -> None:
    old_ca = create_ca(
        "old", not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
    )
    paths = PkiPaths(tmp_path)
    write_identity(paths, issue_cert(old_ca, "h"), old_ca.cert)
    err = _problem(paths)
    assert err.path == paths.cacert and err.what == "CA certificate" and "expired" in str(err)


def test_not_yet_valid_certificate_is_named(tmp_path: Path, ca: Credential) -> None:
    paths = PkiPaths(tmp_path)
    future = issue_cert(ca, "h", not_before=NOW + dt.timedelta(days=2))
    write_identity(paths, future, ca.cert)
    err = _problem(paths)
    assert err.path == paths.cert and "not valid yet" in str(err)


def test_key_not_matching_certificate_is_named(identity: PkiPaths) -> None:
    store.write_key(identity.key, new_key())
    err = _problem(identity)
    assert err.path == identity.key and "does not match the certificate" in str(err)


def test_certificate_from_another_ca_is_named(identity: PkiPaths) -> None:
    other = create_ca("other CA")
    store.write_cert(identity.cacert, other.cert)
    err = _problem(identity)
    assert err.path == identity.cert and "not signed by the CA" in str(err)
    assert "other CA" in str(err)


def test_same_ca_name_with_another_key_is_not_trusted(identity: PkiPaths) -> None:
    impostor = create_ca("unit CA")  # same subject as the real CA, different key
    store.write_cert(identity.cacert, impostor.cert)
    assert "not signed by the CA" in str(_problem(identity))


def test_ca_bundle_is_accepted(identity: PkiPaths, ca: Credential) -> None:
    store.write_cert(identity.cacert, create_ca("first").cert, ca.cert)
    check_identity(identity)


def test_fixture_material_is_what_it_claims(pki: PkiSet) -> None:
    check_identity(pki.ca_dir)
    cas = [pki.ca.cert]
    for cert_path, good in ((pki.client_cert, True), (pki.foreign_cert, False)):
        cert = store.read_cert("c", cert_path)
        assert (cert.issuer == cas[0].subject) is good
    assert store.read_cert("c", pki.expired_cert).not_valid_after_utc < NOW


# --- ensure_dev_pki -----------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.pem")}


def test_dev_pki_is_created_once(tmp_path: Path) -> None:
    paths = ensure_dev_pki(tmp_path / "pki", ["localhost"], ["127.0.0.1", "::1"])
    check_identity(paths)
    first = _snapshot(paths.root)
    assert set(first) == {
        "certs/cacert.pem",
        "certs/vdsmcert.pem",
        "keys/vdsmkey.pem",
        "ca/cacert.pem",
        "ca/private/cakey.pem",
    }
    ensure_dev_pki(tmp_path / "pki", ["localhost"], ["127.0.0.1"])
    assert _snapshot(paths.root) == first


def test_dev_pki_replaces_a_missing_key(tmp_path: Path) -> None:
    paths = ensure_dev_pki(tmp_path, ["localhost"], ["127.0.0.1"])
    ca_before = paths.cacert.read_bytes()
    paths.key.unlink()
    ensure_dev_pki(tmp_path, ["localhost"], ["127.0.0.1"])
    check_identity(paths)
    assert paths.cacert.read_bytes() == ca_before


def test_dev_pki_renews_its_expired_host_certificate(tmp_path: Path) -> None:
    paths = ensure_dev_pki(tmp_path, ["localhost"], ["127.0.0.1"])
    dev_ca = load_ca(dev_ca_paths(tmp_path))
    old = issue_cert(
        dev_ca,
        "localhost",
        not_before=NOW - dt.timedelta(days=9),
        not_after=NOW - dt.timedelta(days=1),
    )
    write_identity(paths, old, dev_ca.cert)
    ensure_dev_pki(tmp_path, ["localhost"], ["127.0.0.1"])
    check_identity(paths)


def test_dev_pki_leaves_a_foreign_certificate_alone(tmp_path: Path) -> None:
    paths = ensure_dev_pki(tmp_path, ["localhost"], ["127.0.0.1"])
    other = create_ca("admin's CA")
    old = issue_cert(
        other, "h", not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
    )
    store.write_cert(paths.cert, old.cert)
    ensure_dev_pki(tmp_path, ["localhost"], ["127.0.0.1"])
    assert store.read_cert("c", paths.cert) == old.cert


def test_concurrent_dev_pki_creation_yields_one_consistent_identity(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def make() -> None:
        try:
            ensure_dev_pki(tmp_path / "pki", ["localhost"], ["127.0.0.1"])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    check_identity(PkiPaths(tmp_path / "pki"))
