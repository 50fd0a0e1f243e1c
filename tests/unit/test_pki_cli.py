"""``vdsm-tool pki``: create a CA, issue, show, and enrol through CSRs, with exit codes."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vdsm_py.cli.tool import main
from vdsm_py.pki import store
from vdsm_py.pki.check import check_identity
from vdsm_py.pki.issue import create_ca, issue_cert, load_ca, write_identity
from vdsm_py.pki.layout import CaPaths, PkiPaths


def tool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["pki", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ca_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "ca"
    assert tool(capsys, "create-ca", "--dir", str(path))[0] == 0
    return path


def test_create_ca_writes_a_private_key_and_refuses_to_overwrite(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = CaPaths(ca_dir)
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    before = paths.key.read_bytes()
    code, _, err = tool(capsys, "create-ca", "--dir", str(ca_dir))
    assert code == 1 and "already exist" in err and "--force" in err
    assert paths.key.read_bytes() == before
    assert tool(capsys, "create-ca", "--dir", str(ca_dir), "--force")[0] == 0
    assert paths.key.read_bytes() != before


def test_issue_installs_a_checked_host_identity(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = tmp_path / "host"
    code, out, _ = tool(
        capsys,
        "issue",
        "--dir",
        str(host),
        "--ca-dir",
        str(ca_dir),
        "--name",
        "h1.example",
        "--ip",
        "192.0.2.1",
        "--ip",
        "2001:db8::1",
    )
    assert code == 0 and "vdsmcert.pem" in out
    paths = PkiPaths(host)
    check_identity(paths)
    cert = store.read_cert("c", paths.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["h1.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "192.0.2.1",
        "2001:db8::1",
    ]


def test_issue_client_certificate_is_client_only(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = tmp_path / "engine"
    assert (
        tool(
            capsys,
            "issue",
            "--dir",
            str(client),
            "--ca-dir",
            str(ca_dir),
            "--cn",
            "engine",
            "--client",
        )[0]
        == 0
    )
    cert = store.read_cert("c", PkiPaths(client).cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    "argv, message",
    [
        ((), "name the certificate"),
        (("--ip", "not-an-ip"), "invalid IP address"),
        (("--name", "h", "--days", "0"), "--days must be positive"),
    ],
)
def test_issue_refuses_bad_requests(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple, message: str
) -> None:
    code, _, err = tool(
        capsys, "issue", "--dir", str(tmp_path / "h"), "--ca-dir", str(ca_dir), *argv
    )
    assert code == 1 and message in err
    assert not (tmp_path / "h").exists()


def test_issue_names_a_missing_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = tool(
        capsys,
        "issue",
        "--dir",
        str(tmp_path / "h"),
        "--ca-dir",
        str(tmp_path / "nope"),
        "--name",
        "h",
    )
    assert code == 1 and f"CA certificate {tmp_path / 'nope' / 'cacert.pem'}: missing" in err


def test_issue_refuses_to_overwrite_an_identity(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("issue", "--dir", str(tmp_path / "h"), "--ca-dir", str(ca_dir), "--name", "h")
    assert tool(capsys, *argv)[0] == 0
    code, _, err = tool(capsys, *argv)
    assert code == 1 and "--force" in err


def test_show_reports_names_and_days_left(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool(
        capsys,
        "issue",
        "--dir",
        str(tmp_path / "h"),
        "--ca-dir",
        str(ca_dir),
        "--name",
        "h1",
        "--ip",
        "192.0.2.1",
        "--days",
        "100",
    )
    code, out, _ = tool(capsys, "show", "--dir", str(tmp_path / "h"))
    assert code == 0
    assert "CN=h1" in out and "DNS:h1, IP:192.0.2.1" in out and "serverAuth, clientAuth" in out
    assert "99 days left" in out and "status: OK" in out
    code, out, _ = tool(capsys, "show", "--dir", str(tmp_path / "h"), "--json")
    doc = json.loads(out)
    assert doc["ok"] is True and doc["certificates"][1]["days_left"] == 99


def test_show_fails_on_an_expired_certificate(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = load_ca(CaPaths(ca_dir))
    now = dt.datetime.now(dt.UTC)
    old = issue_cert(
        ca, "h", not_before=now - dt.timedelta(days=5), not_after=now - dt.timedelta(days=1)
    )
    paths = PkiPaths(tmp_path / "h")
    write_identity(paths, old, ca.cert)
    code, out, err = tool(capsys, "show", "--dir", str(paths.root))
    assert code == 1
    assert "EXPIRED" in out and f"host certificate {paths.cert}: expired on" in err
    code, out, _ = tool(capsys, "show", "--cert", str(paths.cert), "--json")
    assert code == 1 and "expired on" in json.loads(out)["problem"]


def test_show_fails_on_a_certificate_from_another_ca(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = create_ca("other")
    paths = PkiPaths(tmp_path / "h")
    write_identity(paths, issue_cert(other, "h"), load_ca(CaPaths(ca_dir)).cert)
    code, _, err = tool(capsys, "show", "--dir", str(paths.root))
    assert code == 1 and "not signed by the CA" in err


def test_show_a_ca_directory(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = tool(capsys, "show", "--dir", str(ca_dir))
    assert code == 0 and "(CA)" in out


def test_show_names_a_directory_that_holds_no_pki(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = tool(capsys, "show", "--dir", str(tmp_path))
    assert code == 1 and "holds neither" in err


def test_csr_sign_install_enrols_a_host_without_moving_its_key(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, csr, signed = tmp_path / "h", tmp_path / "h.csr", tmp_path / "h.pem"
    assert (
        tool(
            capsys, "csr", "--dir", str(host), "--name", "h2", "--ip", "192.0.2.2", "-o", str(csr)
        )[0]
        == 0
    )
    key_before = PkiPaths(host).key.read_bytes()
    assert (
        tool(capsys, "sign", "--ca-dir", str(ca_dir), "--csr", str(csr), "-o", str(signed))[0] == 0
    )
    code, _, _ = tool(
        capsys,
        "install",
        "--dir",
        str(host),
        "--cert",
        str(signed),
        "--cacert",
        str(CaPaths(ca_dir).cert),
    )
    assert code == 0
    assert PkiPaths(host).key.read_bytes() == key_before
    check_identity(PkiPaths(host))
    # a second CSR reuses the key
    code, out, _ = tool(capsys, "csr", "--dir", str(host), "--name", "h2")
    assert code == 0 and out.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert PkiPaths(host).key.read_bytes() == key_before


def test_install_refuses_a_certificate_for_another_key(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = tmp_path / "h"
    tool(capsys, "csr", "--dir", str(host), "--name", "h", "-o", str(tmp_path / "h.csr"))
    stranger = issue_cert(load_ca(CaPaths(ca_dir)), "h").cert
    store.write_cert(tmp_path / "other.pem", stranger)
    code, _, err = tool(
        capsys,
        "install",
        "--dir",
        str(host),
        "--cert",
        str(tmp_path / "other.pem"),
        "--cacert",
        str(CaPaths(ca_dir).cert),
    )
    assert code == 1 and "does not match the certificate" in err
    assert not PkiPaths(host).cert.exists()


def test_sign_names_a_bad_csr(
    tmp_path: Path, ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csr"
    bad.write_text("not a request")
    code, _, err = tool(capsys, "sign", "--ca-dir", str(ca_dir), "--csr", str(bad))
    assert code == 1 and f"certificate request {bad}" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pki", "issue", "--dir", "x"])
    assert info.value.code == 2
