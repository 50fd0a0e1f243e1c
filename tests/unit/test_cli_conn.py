"""vdsm-client's choice of host, port and certificates, and its connection failure messages."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from vdsm_py.cli import client
from vdsm_py.cli.client_conn import (
    ConnectError,
    Target,
    TargetError,
    call,
    resolve_target,
    ssl_context,
)
from vdsm_py.pki.issue import ensure_dev_pki


def target(*argv: str) -> Target:
    return resolve_target(client.build_parser().parse_intermixed_args([*argv, "Host", "ping2"]))


def test_defaults_are_localhost_54321_and_vdsm_pki_layout():
    assert target() == Target(
        "localhost",
        54321,
        Path("/etc/pki/vdsm/certs/vdsmcert.pem"),
        Path("/etc/pki/vdsm/keys/vdsmkey.pem"),
        Path("/etc/pki/vdsm/certs/cacert.pem"),
    )


def test_pki_dir_and_explicit_files():
    t = target("-a", "h1", "-p", "1234", "--pki-dir", "/srv/pki")
    assert (t.host, t.port, t.cert, t.key, t.cacert) == (
        "h1",
        1234,
        Path("/srv/pki/certs/vdsmcert.pem"),
        Path("/srv/pki/keys/vdsmkey.pem"),
        Path("/srv/pki/certs/cacert.pem"),
    )
    t = target("--cert", "c.pem", "--key", "k.pem", "--cacert", "ca.pem")
    assert (t.cert, t.key, t.cacert) == (Path("c.pem"), Path("k.pem"), Path("ca.pem"))


def test_insecure_target_has_no_certificates():
    t = target("--insecure", "-p", "5")
    assert t.insecure and t.cert is None
    assert ssl_context(t) is None


def test_dev_dir_gives_its_pki_port_and_host(tmp_path):
    (tmp_path / "vdsm_py.conf").write_text("[addresses]\nhost = 127.0.0.1\nport = 40001\n")
    t = target("--dev", str(tmp_path))
    assert (t.host, t.port, t.cacert) == ("127.0.0.1", 40001, tmp_path / "pki/certs/cacert.pem")
    # Explicit options win over the development host's settings.
    t = target("--dev", str(tmp_path), "-a", "::1", "-p", "7")
    assert (t.host, t.port, t.address) == ("::1", 7, "[::1]:7")


def test_dev_dir_listening_on_all_addresses_is_reached_on_localhost(tmp_path):
    (tmp_path / "vdsm_py.conf").write_text("[addresses]\nhost = ::\n")
    t = target("--dev", str(tmp_path))
    assert (t.host, t.port) == ("localhost", 54321)


def test_dev_dir_with_unreadable_port_is_a_usage_error(tmp_path):
    (tmp_path / "vdsm_py.conf").write_text("[addresses]\nport = many\n")
    with pytest.raises(TargetError, match="vdsm_py.conf: cannot read the address"):
        target("--dev", str(tmp_path))


def test_missing_certificate_file_is_named(tmp_path):
    with pytest.raises(
        ConnectError, match=f"CA certificate {tmp_path}/certs/cacert.pem does not exist"
    ):
        ssl_context(target("--pki-dir", str(tmp_path)))


def test_broken_key_is_reported_with_the_files(tmp_path):
    paths = ensure_dev_pki(tmp_path / "pki", hostnames=["localhost"], ips=["127.0.0.1"])
    paths.key.write_text("not a key\n")
    with pytest.raises(ConnectError, match="cannot load the client identity"):
        ssl_context(target("--pki-dir", str(tmp_path / "pki")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection_is_a_connect_error_with_a_hint():
    t = Target("127.0.0.1", free_port())
    with pytest.raises(
        ConnectError,
        match=r"cannot connect to 127.0.0.1:\d+: connection refused "
        r"\(is vdsmd running there\?\)",
    ):
        call(t, "Host.ping2", {}, timeout=10)


def test_cli_exits_3_when_the_host_cannot_be_reached(capsys):
    code = client.main(["--insecure", "-a", "127.0.0.1", "-p", str(free_port()), "Host", "ping2"])
    assert code == client.EXIT_CONNECTION
    assert "connection refused" in capsys.readouterr().err


def test_unchecked_call_skips_the_schema_and_goes_to_the_host(capsys):
    argv = ["--unchecked", "--insecure", "-a", "127.0.0.1", "-p", str(free_port())]
    assert client.main([*argv, "Nope", "verb", "x=1"]) == client.EXIT_CONNECTION
    assert "connection refused" in capsys.readouterr().err
