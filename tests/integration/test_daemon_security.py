"""Only clients with a certificate from the daemon's CA get in; the rest fail the handshake.

Every case runs against a real ``vdsmd --dev`` (its own CA) and ends by showing that a good
client is still served: refusals never disturb the daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest

from vdsm_py.client import Client
from vdsm_py.pki.issue import dev_ca_paths, issue_cert, load_ca
from vdsm_py.pki.store import write_cert, write_key
from vdsm_py.transport.stomp import Frame, encode
from vdsm_py.transport.tls import client_context

CONNECT = encode(Frame("CONNECT", {"accept-version": "1.2", "host": "test"}, b""))


async def stomp_connect_answer(port: int, ctx: ssl.SSLContext | None) -> bytes:
    """What the daemon answers to CONNECT on a fresh connection (b"" if it hangs up)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10
    )
    try:
        writer.write(CONNECT)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


async def assert_refused(port: int, ctx: ssl.SSLContext | None) -> None:
    try:
        answer = await stomp_connect_answer(port, ctx)
    except (ssl.SSLError, ConnectionError, OSError):
        return  # refused during or right after the handshake
    assert not answer.startswith(b"CONNECTED"), answer[:100]


async def assert_served(daemon) -> None:
    client = await Client.connect("127.0.0.1", daemon.port, ssl_context=daemon.client_ssl_context())
    try:
        assert await client.call("Host.ping2") is True
    finally:
        await client.close()


def daemon_ca_client(daemon, tmp: Path, **validity) -> ssl.SSLContext:
    ca = load_ca(dev_ca_paths(daemon.pki_dir))
    cred = issue_cert(ca, "client", purpose="client", **validity)
    write_cert(tmp / "c.pem", cred.cert)
    write_key(tmp / "k.pem", cred.key)
    return client_context(tmp / "c.pem", tmp / "k.pem", daemon.pki_dir / "certs" / "cacert.pem")


async def test_a_client_certificate_from_the_daemons_ca_is_served(dev_daemon, tmp_path):
    await assert_served(dev_daemon)
    ctx = daemon_ca_client(dev_daemon, tmp_path)
    assert (await stomp_connect_answer(dev_daemon.port, ctx)).startswith(b"CONNECTED")


async def test_certificate_from_another_ca_is_refused(dev_daemon, pki):
    cert, key = pki.client_files("good")  # the test session's CA, not the daemon's
    ctx = client_context(cert, key, dev_daemon.pki_dir / "certs" / "cacert.pem")
    await assert_refused(dev_daemon.port, ctx)
    await assert_served(dev_daemon)


async def test_expired_certificate_from_the_right_ca_is_refused(dev_daemon, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    ctx = daemon_ca_client(
        dev_daemon, tmp_path, not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    await assert_refused(dev_daemon.port, ctx)
    await assert_served(dev_daemon)


async def test_no_client_certificate_is_refused(dev_daemon):
    ctx = ssl.create_default_context(cafile=str(dev_daemon.pki_dir / "certs" / "cacert.pem"))
    ctx.check_hostname = False
    await assert_refused(dev_daemon.port, ctx)
    await assert_served(dev_daemon)


async def test_plaintext_is_refused(dev_daemon):
    await assert_refused(dev_daemon.port, None)
    await assert_served(dev_daemon)


@pytest.mark.parametrize("clients", [20])
async def test_refused_clients_do_not_disturb_a_working_one(dev_daemon, pki, clients):
    good = await Client.connect("127.0.0.1", dev_daemon.port, ssl_context=dev_daemon.client_ssl_context())
    try:
        await asyncio.gather(*(assert_refused(dev_daemon.port, None) for _ in range(clients)))
        assert await good.call("Host.ping2") is True
    finally:
        await good.close()


async def _wait_for_log(daemon, text: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout * 10)):
        if text in daemon.log():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} not in the daemon log")


async def test_sighup_reloads_certificates_and_trusted_ca_without_a_restart(dev_daemon, tmp_path):
    import signal

    from vdsm_py.pki.issue import create_ca, write_identity
    from vdsm_py.pki.layout import PkiPaths

    old_ctx = dev_daemon.client_ssl_context()
    kept = await Client.connect("127.0.0.1", dev_daemon.port, ssl_context=old_ctx)
    try:
        # A new CA (an engine enrolling the host) and a new host identity under it.
        new_ca = create_ca("engine CA")
        host = issue_cert(new_ca, "localhost", hostnames=["localhost"], ips=["127.0.0.1"])
        write_identity(PkiPaths(dev_daemon.pki_dir), host, new_ca.cert)
        dev_daemon.proc.send_signal(signal.SIGHUP)
        await _wait_for_log(dev_daemon, "certificates reloaded")

        await assert_refused(dev_daemon.port, old_ctx)  # the old CA's clients are out
        await assert_served(dev_daemon)  # the new identity, trusted by the new CA
        assert await kept.call("Host.ping2") is True  # established connections stay
        assert dev_daemon.proc.poll() is None
    finally:
        await kept.close()


async def test_sighup_with_broken_pki_keeps_the_current_certificates(dev_daemon):
    import signal

    key = dev_daemon.pki_dir / "keys" / "vdsmkey.pem"
    saved = key.read_bytes()
    key.write_text("not a key")
    try:
        dev_daemon.proc.send_signal(signal.SIGHUP)
        await _wait_for_log(dev_daemon, "keeping the current certificates")
    finally:
        key.write_bytes(saved)
    await assert_served(dev_daemon)
