"""The ``engine-lite`` command line against ``engine-lite serve`` and a real dev host, and
a host that answers garbage. The CLI path enrolls with ``--dev-dir``: the engine itself
restarts the dev daemon (found through its lock file), as the README demo does."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_proc import REPO, start_daemon

ENGINE_SRC = REPO / "contrib" / "engine-lite"
sys.path.insert(0, str(ENGINE_SRC))

from engine_lite.config import EngineConfig
from engine_lite.engine import Engine
from engine_lite.hostside import _lock_held, dev_host_pid
from engine_lite.models import Host, HostStatus
from engine_lite.pki import EngineCa, serial_text
from engine_lite.repo import SqliteRepository

from vdsm_py.pki.issue import issue_cert, write_identity
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.transport.tls import server_context

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(ENGINE_SRC)])}
FAST = """[engine]
vm_stats_interval = 0.5
host_stats_interval = 1
heartbeat_ms = 1000
call_timeout = 5
connect_timeout = 5
nonresponsive_after = 3
backoff_initial = 0.2
backoff_max = 1
enroll_timeout = 60
"""


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine_lite.cli", "--state", str(state),
                           *args], env=ENV, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "engine"
    state.mkdir()
    (state / "engine-lite.conf").write_text(FAST)
    log = open(tmp_path / "engine.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "engine_lite.cli", "--state", str(state),
                             "serve"], env=ENV, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not (state / "engine.sock").exists():
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()
            assert time.monotonic() < deadline, "engine-lite serve did not start"
            time.sleep(0.1)
        yield state
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0, (tmp_path / "engine.log").read_text()[-3000:]
        finally:
            proc.kill()
            log.close()


def stop_dev_host(root: Path) -> None:
    """Stop whatever daemon holds the dev host's lock (the engine may have restarted it)."""
    pid = dev_host_pid(root)
    if pid is not None and _lock_held(root):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _lock_held(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _lock_held(root):
            os.kill(pid, signal.SIGKILL)


def test_cli_enrolls_a_dev_host_and_reports_clear_errors(served: Path, tmp_path: Path) -> None:
    root = tmp_path / "host"
    daemon = start_daemon(root)
    try:
        added = cli(served, "--json", "host", "add", "local", "--dev-dir", str(root))
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["status"] == "Up"
        listed = json.loads(cli(served, "--json", "host", "list").stdout)
        assert [(h["name"], h["status"], h["port"]) for h in listed] == \
            [("local", "Up", daemon.port)]
        again = cli(served, "host", "add", "local", "--dev-dir", str(root))
        assert again.returncode == 1 and "host named 'local' already exists" in again.stderr

        assert cli(served, "vm", "create", "huge", "--memory", str(64 * 1024 * 1024)) \
            .returncode == 0
        dup = cli(served, "vm", "create", "huge", "--memory", "128")
        assert dup.returncode == 1 and "VM named 'huge' already exists" in dup.stderr
        start = cli(served, "vm", "start", "huge")
        assert start.returncode == 1
        assert "no host fits (local: not enough memory" in start.stderr
        missing = cli(served, "vm", "start", "nope")
        assert missing.returncode == 1 and "no VM named 'nope'" in missing.stderr
        maint = cli(served, "--json", "host", "maintenance", "local")
        assert json.loads(maint.stdout)["status"] == "Maintenance"
        table = cli(served, "host", "list").stdout
        assert table.splitlines()[0].split()[:2] == ["NAME", "STATUS"]
        assert "Maintenance" in table
        events = cli(served, "events").stdout
        assert "local: Initializing -> Up" in events
    finally:
        daemon.close()
        stop_dev_host(root)


async def test_host_answering_garbage_becomes_nonresponsive(tmp_path: Path) -> None:
    config = EngineConfig.load(tmp_path / "engine", call_timeout=2.0, connect_timeout=2.0,
                               nonresponsive_after=2.0, backoff_initial=0.2, backoff_max=0.5)
    ca = EngineCa(config.ca_dir, config.identity_dir)
    ca.ensure()
    cred = issue_cert(ca.ca, "localhost", ips=["127.0.0.1"])
    paths = PkiPaths(tmp_path / "garbage")
    write_identity(paths, cred, ca.ca.cert)
    answered = 0

    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await reader.read(1024)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n\x00\x00{not stomp at all}\x00")
        answered += 1
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    ctx: ssl.SSLContext = server_context(paths)
    server = await asyncio.start_server(babble, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    repo = SqliteRepository(config.db_path)
    repo.add_host(Host("g", "garbage", repo.default_cluster().id, "127.0.0.1", port,
                       status=HostStatus.UP, cert_serial=serial_text(cred.cert.serial_number)))
    repo.close()
    engine = Engine(config)
    await engine.start()
    try:
        host = await engine.wait_host_status("garbage", HostStatus.NON_RESPONSIVE, 30)
        assert answered >= 1
        assert "malformed" in host.status_reason or "closed" in host.status_reason
        await engine.vms.create("still-works", 64)  # the engine itself is unaffected
    finally:
        await engine.close()
        server.close()
