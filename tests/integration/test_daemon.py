"""The daemon as a process: start-up checks, one instance per host, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.integration.daemon_proc import REPO, start_daemon


def run_vdsmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vdsm_py.cli.vdsmd", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )


def test_sigterm_stops_cleanly_and_tells_systemd(dev_daemon):
    assert any("READY=1" in n for n in dev_daemon.notifications)
    assert dev_daemon.stop(signal.SIGTERM) == 0
    notes = "\n".join(dev_daemon.read_notifications(1.0))
    assert "STOPPING=1" in notes
    assert "vdsm_py stopped" in dev_daemon.log()


def test_second_instance_on_the_same_host_is_refused(dev_daemon):
    result = run_vdsmd("--dev", str(dev_daemon.root), "--port", "1")
    assert result.returncode == 1
    assert f"another vdsmd (pid {dev_daemon.pid})" in result.stderr
    assert dev_daemon.proc.poll() is None  # the first one keeps running


def test_missing_certificate_is_named(tmp_path):
    daemon = start_daemon(tmp_path / "host")  # creates the PKI
    daemon.close()
    cert = tmp_path / "host" / "pki" / "certs" / "vdsmcert.pem"
    cert.unlink()
    result = run_vdsmd("--config", str(tmp_path / "host" / "vdsm_py.conf"))
    assert result.returncode == 1
    assert str(cert) in result.stderr


def test_configuration_errors_are_reported_before_anything_starts(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[addresses]\nport = lots\n")
    result = run_vdsmd("--config", str(conf))
    assert result.returncode == 2
    assert "[addresses] port: invalid value 'lots'" in result.stderr


def test_port_in_use_is_a_clear_error(dev_daemon, tmp_path):
    daemon = start_daemon(tmp_path / "other", port=dev_daemon.port, wait=False)
    try:
        assert daemon.proc.wait(60) == 1
        assert f"cannot listen on 127.0.0.1 port {dev_daemon.port}" in daemon.log()
    finally:
        daemon.close()


@pytest.mark.parametrize("flag", ["--insecure"])
def test_insecure_mode_is_logged_loudly(tmp_path, flag):
    daemon = start_daemon(tmp_path / "host", extra_args=[flag])
    try:
        assert "INSECURE MODE" in daemon.log()
    finally:
        daemon.close()
