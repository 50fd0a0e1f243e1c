"""Mutual TLS with ``server_context``/``client_context`` over real sockets on loopback.

A tiny asyncio echo server stands in for the daemon: its handler runs only after a
completed handshake, so a refused client must never reach it. Each refusal is checked
with TLS 1.3 (the client learns after its side of the handshake) and TLS 1.2 (the client's
own handshake fails).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import PkiSet
from vdsm_py.pki.check import PkiError
from vdsm_py.pki.issue import issue_cert, write_identity
from vdsm_py.pki.layout import PkiPaths
from vdsm_py.transport.tls import client_context, peer_common_name, server_context

REFUSAL = (ssl.SSLError, ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)


@dataclass
class EchoServer:
    server: asyncio.Server
    port: int
    peers: list[str | None] = field(default_factory=list)


@pytest.fixture
async def echo(pki: PkiSet) -> AsyncIterator[EchoServer]:
    state: EchoServer

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.peers.append(peer_common_name(writer.get_extra_info("ssl_object")))
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=pki.server_context(), ssl_handshake_timeout=10
    )
    state = EchoServer(server, server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def _limit(ctx: ssl.SSLContext, version: str) -> ssl.SSLContext:
    ctx.maximum_version = ssl.TLSVersion[version]
    return ctx


async def _round_trip(port: int, ctx: ssl.SSLContext | None) -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx), timeout=10
    )
    try:
        writer.write(b"ping\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(5), timeout=10)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except REFUSAL:
            pass


VERSIONS = pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])


@VERSIONS
async def test_client_signed_by_the_ca_gets_in_and_is_named(
    echo: EchoServer, pki: PkiSet, version: str
) -> None:
    assert await _round_trip(echo.port, _limit(pki.client_context("good"), version)) == b"ping\n"
    assert echo.peers == ["test-client"]


async def test_host_identity_also_works_as_a_client(echo: EchoServer, pki: PkiSet) -> None:
    ctx = client_context(pki.ca_dir.cert, pki.ca_dir.key, pki.ca_dir.cacert)
    assert await _round_trip(echo.port, ctx) == b"ping\n"
    assert echo.peers == ["localhost"]


@VERSIONS
@pytest.mark.parametrize("kind", ["foreign", "expired"])
async def test_bad_client_certificate_is_refused_at_handshake(
    echo: EchoServer, pki: PkiSet, kind: str, version: str
) -> None:
    with pytest.raises(REFUSAL):
        await _round_trip(echo.port, _limit(pki.client_context(kind), version))  # type: ignore[arg-type]
    assert echo.peers == []


@VERSIONS
async def test_client_without_certificate_is_refused_at_handshake(
    echo: EchoServer, pki: PkiSet, version: str
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(pki.ca_dir.cacert))
    with pytest.raises(REFUSAL):
        await _round_trip(echo.port, _limit(ctx, version))
    assert echo.peers == []


async def test_plaintext_connection_is_refused(echo: EchoServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo.port)
    try:
        writer.write(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
        await writer.drain()
        try:
            reply = await asyncio.wait_for(reader.read(4096), timeout=10)
        except ConnectionResetError:
            reply = b""
    finally:
        writer.close()
    # The server answers a plaintext frame with at most a TLS alert, then hangs up.
    assert not reply.startswith(b"CONNECTED")
    assert b"CONNECT" not in reply
    assert echo.peers == []


async def test_client_refuses_server_signed_by_another_ca(echo: EchoServer, pki: PkiSet) -> None:
    ctx = client_context(pki.client_cert, pki.client_key, pki.foreign_cacert)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _round_trip(echo.port, ctx)
    assert echo.peers == []


async def test_server_stays_available_after_refusals(echo: EchoServer, pki: PkiSet) -> None:
    for kind in ("foreign", "expired"):
        with pytest.raises(REFUSAL):
            await _round_trip(echo.port, pki.client_context(kind))  # type: ignore[arg-type]
    assert await _round_trip(echo.port, pki.client_context("good")) == b"ping\n"
    assert echo.peers == ["test-client"]


def test_server_context_names_an_unloadable_identity(tmp_path: Path, pki: PkiSet) -> None:
    paths = PkiPaths(tmp_path)
    write_identity(paths, issue_cert(pki.ca, "h"), pki.ca.cert)
    paths.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PkiError) as info:
        server_context(paths)
    assert info.value.path == paths.cert and str(paths.key) in str(info.value)


def test_peer_common_name_without_tls_is_none() -> None:
    assert peer_common_name(None) is None
