"""The real ``vdsm-client`` command against a real ``vdsmd --dev`` host, over mutual TLS.

Every test runs the console script in a subprocess, as an admin would, and checks its
output and exit code: 0 success, 1 the host's error, 2 a bad command line, 3 unreachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.integration.daemon_proc import REPO, DaemonProcess, free_port, start_daemon
from vdsm_py.client.raw import RawStomp
from vdsm_py.pki.issue import ensure_dev_pki
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.transport.stomp import Frame

SCRIPT = REPO / ".venv" / "bin" / "vdsm-client"


def client_argv() -> list[str]:
    """The installed console script when there is one, else the same entry point by module."""
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "vdsm_py.cli.client"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def vdsm_client(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_argv(), *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One development host for the read-only tests of this module."""
    daemon = start_daemon(tmp_path_factory.mktemp("cli") / "host")
    try:
        yield daemon
    finally:
        daemon.close()


def test_ping2_through_the_dev_dir_prints_true(host):
    result = vdsm_client("--dev", str(host.root), "Host", "ping2")
    assert (result.returncode, result.stdout, result.stderr) == (0, "true\n", "")


def test_explicit_address_and_certificate_files(host):
    paths = PkiPaths(host.pki_dir)
    result = vdsm_client(
        "-a", "127.0.0.1", "-p", str(host.port),
        "--cert", str(paths.cert), "--key", str(paths.key), "--cacert", str(paths.cacert),
        "Host.ping2",
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "true\n")
    result = vdsm_client("-p", str(host.port), "--pki-dir", str(host.pki_dir), "Host", "ping2")
    assert (result.returncode, result.stdout) == (0, "true\n")


def test_result_is_pretty_json_with_sorted_keys(host):
    result = vdsm_client("--dev", str(host.root), "Host", "getStats")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert isinstance(stats, dict) and stats
    assert result.stdout == json.dumps(stats, indent=4, sort_keys=True) + "\n"


def test_table_output_shows_one_line_per_field(host):
    result = vdsm_client("--dev", str(host.root), "-o", "table", "Host", "getHardwareInfo")
    assert result.returncode == 0, result.stderr
    info = json.loads(vdsm_client("--dev", str(host.root), "Host", "getHardwareInfo").stdout)
    if not info:  # a host without DMI: the table says so
        assert result.stdout == "(empty object)\n"
        return
    lines = result.stdout.splitlines()
    assert len(lines) == len(info)
    for line in lines:
        name, _, value = line.partition(" ")
        assert info[name] == value.strip()


def test_params_file_on_stdin_is_sent(host):
    result = vdsm_client("--dev", str(host.root), "Host", "ping2", "-f", "-", stdin="{}")
    assert (result.returncode, result.stdout) == (0, "true\n")


def test_bad_parameter_is_refused_before_sending(host):
    result = vdsm_client("--dev", str(host.root), "--flow-id", "cli-local-7", "Host", "ping2",
                         "bogus=1")  # fmt: skip
    assert result.returncode == 2
    assert "Host.ping2 has no parameter 'bogus'" in result.stderr
    assert result.stdout == ""
    assert "cli-local-7" not in host.log()


def test_host_error_exits_1_with_code_and_message(host):
    result = vdsm_client("--dev", str(host.root), "--unchecked", "--flow-id", "cli-flow-42",
                         "Host", "ping2", "bogus=1")  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error 91: Invalid parameter: bogus")
    _wait_for(lambda: "flow cli-flow-42" in host.log(), "the daemon logs the flow id")


def test_unknown_method_is_the_host_s_minus_32601(host):
    result = vdsm_client("--dev", str(host.root), "--unchecked", "Host", "noSuchVerb")
    assert result.returncode == 1
    assert result.stderr.startswith("error -32601:")


def test_watch_events_prints_each_event_as_a_json_line(host):
    proc = subprocess.Popen(
        [*client_argv(), "--dev", str(host.root), "--watch-events", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=REPO,
    )
    try:
        # The watcher subscribes at its own pace; publish until it has seen two events.
        sent = asyncio.run(_publish_until_exit(host, proc))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    events = [json.loads(line) for line in lines]
    assert all(e["method"] == "|test|tick|cli" for e in events)
    seqs = [e["params"]["seq"] for e in events]
    assert seqs[1] == seqs[0] + 1 and seqs[1] < sent


async def _publish_until_exit(host: DaemonProcess, proc: subprocess.Popen[str]) -> int:
    """Send events (as VDSM's broker lets any client do) until the watcher exits."""
    stomp = await RawStomp.open("127.0.0.1", host.port, ssl_context=host.client_ssl_context())
    try:
        assert (await stomp.connect()).command == "CONNECTED"
        seq = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            body = orjson.dumps(
                {"jsonrpc": "2.0", "method": "|test|tick|cli", "params": {"seq": seq}}
            )
            stomp.send(Frame("SEND", {"destination": "jms.queue.events",
                                      "content-type": "application/json"}, body))  # fmt: skip
            await stomp.drain()
            seq += 1
            await asyncio.sleep(0.1)
        return seq
    finally:
        stomp.close()


def test_client_certificate_from_another_ca_is_refused(host, tmp_path):
    other = ensure_dev_pki(tmp_path / "other", hostnames=["localhost"], ips=["127.0.0.1"])
    ours = PkiPaths(host.pki_dir)
    result = vdsm_client(
        "-a", "127.0.0.1", "-p", str(host.port),
        "--cert", str(other.cert), "--key", str(other.key), "--cacert", str(ours.cacert),
        "Host", "ping2",
    )  # fmt: skip
    assert result.returncode == 3
    assert "accept our certificate" in result.stderr
    # And the other way round: a host whose certificate we do not trust.
    result = vdsm_client("-p", str(host.port), "--pki-dir", str(other.root), "Host", "ping2")
    assert result.returncode == 3
    assert "the host's certificate is not trusted" in result.stderr


def test_plaintext_client_is_told_the_host_requires_tls(host):
    result = vdsm_client("--insecure", "-a", "127.0.0.1", "-p", str(host.port), "Host", "ping2")
    assert result.returncode == 3
    assert "requires TLS" in result.stderr


def test_nothing_listening_exits_3():
    result = vdsm_client("-a", "127.0.0.1", "-p", str(free_port()), "--insecure", "Host", "ping2")
    assert result.returncode == 3
    assert "connection refused" in result.stderr


def test_insecure_client_talks_to_an_insecure_daemon(tmp_path):
    daemon = start_daemon(tmp_path / "plain", extra_args=["--insecure"])
    try:
        result = vdsm_client("--insecure", "-a", "127.0.0.1", "-p", str(daemon.port),
                             "Host", "ping2")  # fmt: skip
        assert (result.returncode, result.stdout) == (0, "true\n")
    finally:
        daemon.close()


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


def test_help_needs_no_daemon():
    result = vdsm_client("Host", "ping2", "--help")
    assert result.returncode == 0
    assert "Returns: boolean" in result.stdout
