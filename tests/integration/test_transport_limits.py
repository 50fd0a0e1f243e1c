"""The STOMP server under stress and misbehaving peers: idle and trickling clients,
heart-beats both ways, connect deadline, connection limit, in-flight cap, 500 connections,
and an orderly close()."""

from __future__ import annotations

import asyncio
import resource

import orjson
import pytest

from tests.integration import transport_support
from tests.integration.transport_support import request_frame
from vdsm_py.client import Client, ConnectionLost, StompError
from vdsm_py.client.raw import RawStomp
from vdsm_py.transport.stomp import Frame, encode

serve = transport_support.serve  # the fixture starting servers


async def test_idle_connections_do_not_block_others(serve, pki):
    served = await serve()
    # One finished TLS and says nothing; one never even starts the TLS handshake.
    idle_tls = await served.raw(connect=False)
    _, idle_tcp = await asyncio.open_connection("127.0.0.1", served.port)
    async with await served.client() as client:
        for i in range(20):
            assert await client.call("echo", {"i": i}) == {"i": i}
    idle_tls.close()
    idle_tcp.close()


async def test_byte_by_byte_client_is_served_without_blocking_others(serve):
    served = await serve()
    trickle = await served.raw(connect=False)
    data = (
        encode(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"}))
        + encode(Frame("SUBSCRIBE", {"destination": "slow-replies", "id": "s"}))
        + encode(request_frame("echo", {"slowly": True}, reply_to="slow-replies", call_id="t"))
    )

    async def send_slowly() -> None:
        for i in range(len(data)):
            trickle.send_bytes(data[i : i + 1])
            await trickle.drain()
            await asyncio.sleep(0.002)

    sender = asyncio.create_task(send_slowly())
    async with await served.client() as client:
        done = 0
        while not sender.done():
            assert await client.call("echo", {"n": done}) == {"n": done}
            done += 1
    await sender
    assert done > 10  # the normal client made progress while the other trickled
    assert (await trickle.read_frame()).command == "CONNECTED"
    answer = await trickle.read_frame()
    assert orjson.loads(answer.body) == {"jsonrpc": "2.0", "id": "t", "result": {"slowly": True}}
    trickle.close()


async def test_heartbeats_arrive_at_the_negotiated_interval(serve):
    served = await serve()
    conn = await served.raw(connect=False)
    connected = await conn.connect(heartbeat="0,1000")
    assert connected.headers["heart-beat"] == "1000,0"
    await conn.wait_heartbeats(3, timeout=15)
    conn.close()


async def test_heartbeats_arrive_even_when_the_client_asked_for_none(serve):
    served = await serve(heartbeat_ms=1000)
    conn = await served.raw(connect=False)
    connected = await conn.connect(heartbeat="0,0")
    assert connected.headers["heart-beat"] == "0,0"
    await conn.wait_heartbeats(2, timeout=15)
    conn.close()


async def test_heartbeats_never_slower_than_the_configured_floor(serve):
    served = await serve(heartbeat_ms=1000)
    conn = await served.raw(connect=False)
    await conn.connect(heartbeat="0,60000")  # asks for one a minute
    await conn.wait_heartbeats(2, timeout=15)
    conn.close()


async def test_client_silent_past_its_promised_heartbeats_is_closed(serve):
    served = await serve()
    conn = await served.raw(connect=False)
    await conn.connect(heartbeat="1000,0")  # promises a heart-beat every second, then sleeps
    await conn.read_until_closed(timeout=30)
    assert conn.closed_by_peer


async def test_client_library_heartbeats_keep_its_connection_open(serve):
    served = await serve()
    client = await served.client(heartbeat=(1000, 1000))
    await asyncio.sleep(4.5)  # well past the server's 3 s silence limit for this client
    assert await client.call("echo", {"alive": True}) == {"alive": True}
    await client.close()


async def test_connection_without_connect_frame_is_closed_at_the_deadline(serve):
    served = await serve(connect_timeout=1.0)
    no_stomp = await served.raw(connect=False)
    frames = await no_stomp.read_until_closed(timeout=30)
    assert [f.command for f in frames] == ["ERROR"]
    assert frames[0].headers["message"] == "Connect timeout"

    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)  # no TLS at all
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


async def test_connection_limit_refuses_with_error_and_frees_slots(serve):
    served = await serve(max_connections=2)
    first = await served.client()
    second = await served.client()
    with pytest.raises(StompError, match="too many connections"):
        await served.client()
    await first.close()
    for _ in range(100):
        if served.server.stats()["connections"] < 2:
            break
        await asyncio.sleep(0.05)
    third = await served.client()
    assert await third.call("echo", {}) == {}
    assert served.server.stats()["refused_total"] == 1
    await second.close()
    await third.close()


async def test_in_flight_requests_of_one_connection_are_capped(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("r", "s")
    data = b"".join(
        encode(request_frame("sleep", {"seconds": 0.05, "tag": i}, reply_to="r", call_id=str(i)))
        for i in range(300)
    )
    conn.send_bytes(data)  # one burst: far more than the connection may run at once
    results = set()
    for _ in range(300):
        results.add(orjson.loads((await conn.read_frame(timeout=30)).body)["result"])
    assert results == set(range(300))
    assert 1 < served.rpc.max_running <= 64
    conn.close()


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {need}")


@pytest.mark.slow
async def test_500_concurrent_connections_are_served(serve, pki):
    _raise_nofile(2 * 500 + 200)
    served = await serve()
    context = pki.client_context()
    sem = asyncio.Semaphore(50)  # bound concurrent handshakes, not connections

    async def open_one() -> Client:
        async with sem:
            return await Client.connect("127.0.0.1", served.port, ssl_context=context, timeout=120)

    clients = await asyncio.gather(*(open_one() for _ in range(500)))
    try:
        assert served.server.stats()["connections"] == 500
        results = await asyncio.gather(
            *(c.call("echo", {"i": i}, timeout=120) for i, c in enumerate(clients))
        )
        assert results == [{"i": i} for i in range(500)]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_close_flushes_running_responses_then_closes_everything(serve):
    served = await serve()
    client = await served.client()
    idle = await served.raw()
    running = asyncio.create_task(client.call("sleep", {"seconds": 0.5, "tag": "finished"}))
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(served.server.close(grace=5.0))
    assert await running == "finished"  # answered during shutdown
    await closing
    await served.server.close()  # idempotent
    assert served.server.stats()["connections"] == 0
    await idle.read_until_closed(timeout=10)
    with pytest.raises(ConnectionLost):
        await client.call("echo", {})
    with pytest.raises(OSError):
        await RawStomp.open("127.0.0.1", served.port, ssl_context=served.pki.client_context())
    await client.close()
