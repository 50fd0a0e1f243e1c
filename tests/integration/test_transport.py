"""The STOMP server and the client library over real mutual TLS: calls, routing, events,
DISCONNECT, and protocol errors that close one connection and nothing else."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from tests.integration import transport_support
from tests.integration.transport_support import REQUESTS, TinyRpc, request_frame
from vdsm_py.client import Client, ConnectionLost, RpcError, StompError, SyncClient
from vdsm_py.config import RpcConfig
from vdsm_py.events import EventBus
from vdsm_py.executor import Executor
from vdsm_py.rpc.dispatch import Dispatcher
from vdsm_py.rpc.schema import Schema
from vdsm_py.transport.server import StompServer
from vdsm_py.transport.stomp import Frame, encode

serve = transport_support.serve  # the fixture starting servers


async def test_call_round_trip_over_mutual_tls(serve):
    served = await serve()
    client = await served.client()
    try:
        assert await client.call("echo", {"vmId": "x", "n": [1, 2]}) == {"vmId": "x", "n": [1, 2]}
        ctx = await client.call("whoami", flow_id="flow-42")
    finally:
        await client.close()
    assert ctx["peer_subject"] == "test-client"
    assert ctx["flow_id"] == "flow-42"
    assert ctx["peer"].startswith("127.0.0.1:")
    assert ctx["client_id"]


async def test_error_answer_raises_rpc_error_with_code_and_message(serve):
    served = await serve()
    async with await served.client() as client:
        with pytest.raises(RpcError) as info:
            await client.call("fail", {"code": 1, "message": "Virtual machine does not exist"})
        assert (info.value.code, info.value.message) == (1, "Virtual machine does not exist")
        with pytest.raises(RpcError) as info:
            await client.call("no.such")
        assert info.value.code == -32601
        assert await client.call("echo", {"still": "works"}) == {"still": "works"}


async def test_request_is_sent_as_vdsm_client_sends_it(serve):
    """A batch of one to jms.topic.vdsm_requests with reply-to, content-type and flow id."""
    served = await serve()
    spy = await served.raw()
    await spy.subscribe(REQUESTS, "spy")  # explicit subscribers get a copy of requests
    async with await served.client() as client:
        await client.call("echo", {"a": 1}, flow_id="f1")
    copy = await spy.read_frame()
    assert copy.command == "MESSAGE"
    assert copy.headers["destination"] == REQUESTS
    assert copy.headers["subscription"] == "spy"
    assert copy.headers["content-type"] == "application/json"
    assert copy.headers["ovirtCorrelationId"] == "f1"
    assert copy.headers["reply-to"]
    request = orjson.loads(copy.body)
    assert isinstance(request, list) and len(request) == 1
    assert request[0]["method"] == "echo" and request[0]["params"] == {"a": 1}
    spy.close()


async def test_batch_of_several_gets_an_array_and_single_request_an_object(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("replies", "s1")
    batch = [
        {"jsonrpc": "2.0", "method": "echo", "params": {"i": i}, "id": f"id{i}"} for i in range(3)
    ]
    conn.send(Frame("SEND", {"destination": REQUESTS, "reply-to": "replies"}, orjson.dumps(batch)))
    answer = orjson.loads((await conn.read_frame()).body)
    assert [r["result"] for r in answer] == [{"i": 0}, {"i": 1}, {"i": 2}]
    conn.send(request_frame("echo", {"one": 1}, reply_to="replies", call_id="x", batch=False))
    assert orjson.loads((await conn.read_frame()).body) == {
        "jsonrpc": "2.0",
        "id": "x",
        "result": {"one": 1},
    }
    conn.close()


async def test_response_goes_to_every_subscription_of_the_reply_to(serve):
    served = await serve()
    first, second, other = await served.raw(), await served.raw(), await served.raw()
    await first.subscribe("shared-replies", "a1")
    await first.subscribe("shared-replies", "a2")
    await second.subscribe("shared-replies", "b1")
    await other.subscribe("other-replies", "c1")
    first.send(request_frame("echo", {"k": "v"}, reply_to="shared-replies", call_id="r1"))

    got = {}
    for conn, count in ((first, 2), (second, 1)):
        for _ in range(count):
            frame = await conn.read_frame()
            assert frame.command == "MESSAGE"
            assert frame.headers["destination"] == "shared-replies"
            assert frame.headers["content-type"] == "application/json"
            assert int(frame.headers["content-length"]) == len(frame.body)
            assert frame.headers["message-id"]
            got[frame.headers["subscription"]] = orjson.loads(frame.body)
    assert sorted(got) == ["a1", "a2", "b1"]
    assert all(r == {"jsonrpc": "2.0", "id": "r1", "result": {"k": "v"}} for r in got.values())

    # The unrelated subscriber got nothing: its next frame is the answer to its own call.
    other.send(request_frame("echo", {}, reply_to="other-replies", call_id="mine"))
    assert orjson.loads((await other.read_frame()).body)["id"] == "mine"
    for conn in (first, second, other):
        conn.close()


async def test_unsubscribed_reply_destination_gets_nothing(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("r", "s1")
    conn.send(Frame("UNSUBSCRIBE", {"id": "s1"}))
    await conn.subscribe("r2", "s2")
    conn.send(request_frame("echo", {}, reply_to="r", call_id="lost"))  # nobody listens: dropped
    conn.send(request_frame("echo", {}, reply_to="r2", call_id="kept"))
    frame = await conn.read_frame()
    assert frame.headers["subscription"] == "s2"
    assert orjson.loads(frame.body)["id"] == "kept"
    assert served.server.stats()["subscriptions"] == 1
    conn.close()


async def test_send_to_another_destination_is_forwarded_to_its_subscribers(serve):
    served = await serve()
    listener, sender = await served.raw(), await served.raw()
    await listener.subscribe("app.topic", "t1")
    sender.send(Frame("SEND", {"destination": "app.topic.sub", "x-note": "a:b"}, b"\0payload"))
    frame = await listener.read_frame()
    assert frame.command == "MESSAGE"
    assert frame.body == b"\0payload"
    assert frame.headers["subscription"] == "t1"
    assert frame.headers["destination"] == "app.topic.sub"
    assert frame.headers["x-note"] == "a:b"
    listener.close()
    sender.close()


async def test_events_reach_subscribers_only(serve):
    served = await serve()
    watcher = await served.client()
    bystander = await served.raw()
    await bystander.subscribe("my-replies", "r")
    stream = await watcher.subscribe_events(confirm=True)

    served.events.publish("|virt|VM_status|vm-1", {"vm-1": {"status": "Up"}})
    method, params = await asyncio.wait_for(anext(stream), 10)
    assert method == "|virt|VM_status|vm-1"
    assert params["vm-1"] == {"status": "Up"}
    assert isinstance(params["notify_time"], int)

    bystander.send(request_frame("echo", {}, reply_to="my-replies", call_id="after"))
    frame = await bystander.read_frame()
    assert orjson.loads(frame.body)["id"] == "after"  # no event came before it

    await stream.close()
    assert await watcher.call("echo", {}) == {}  # the UNSUBSCRIBE is handled by now
    served.events.publish("|virt|VM_status|vm-2", {})
    assert served.server.stats()["events_sent_total"] == 1
    await watcher.close()
    bystander.close()


async def test_event_on_raw_wire_is_a_jsonrpc_notification(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("jms.queue.events", "ev")
    served.events.publish("|net|host_conn|x", {"a": 1})
    frame = await conn.read_frame()
    assert frame.headers["destination"] == "jms.queue.events"
    assert frame.headers["subscription"] == "ev"
    message = orjson.loads(frame.body)
    assert message["jsonrpc"] == "2.0" and "id" not in message
    assert message["method"] == "|net|host_conn|x" and message["params"]["a"] == 1
    conn.close()


async def test_disconnect_with_receipt_answers_receipt_then_closes(serve):
    served = await serve()
    conn = await served.raw()
    conn.send(Frame("DISCONNECT", {"receipt": "bye-1"}))
    frames = await conn.read_until_closed()
    assert [(f.command, f.headers) for f in frames] == [("RECEIPT", {"receipt-id": "bye-1"})]


async def test_disconnect_lets_running_requests_answer_first(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("r", "s")
    conn.send(request_frame("sleep", {"seconds": 0.3, "tag": "late"}, reply_to="r", call_id="z"))
    conn.send(Frame("DISCONNECT", {"receipt": "bye"}))
    frames = await conn.read_until_closed()
    assert [f.command for f in frames] == ["MESSAGE", "RECEIPT"]
    assert orjson.loads(frames[0].body)["result"] == "late"


async def test_client_close_is_clean_and_idempotent(serve):
    served = await serve()
    client = await served.client()
    await client.call("echo", {})
    await client.close()
    await client.close()
    with pytest.raises(ConnectionLost):
        await client.call("echo", {})
    for _ in range(100):
        if served.server.stats()["connections"] == 0:
            break
        await asyncio.sleep(0.05)
    assert served.server.stats()["connections"] == 0


@pytest.mark.parametrize("versions", ["1.0,1.1", "1.0", ""])
async def test_unsupported_version_gets_error_and_close(serve, versions):
    served = await serve()
    conn = await served.raw(connect=False)
    conn.send(Frame("CONNECT", {"accept-version": versions} if versions else {}))
    frames = await conn.read_until_closed()
    assert [f.command for f in frames] == ["ERROR"]
    assert frames[0].headers["message"] == "Version unsupported"


async def test_accept_version_list_containing_1_2_connects(serve):
    served = await serve()
    conn = await served.raw(connect=False)
    frame = await conn.connect(accept_version="1.0,1.1,1.2", heartbeat="5000,24000")
    assert frame.command == "CONNECTED"
    assert frame.headers["version"] == "1.2"
    assert frame.headers["heart-beat"] == "24000,5000"  # VDSM swaps cx,cy
    conn.close()


async def test_heartbeat_below_one_second_is_raised_to_one_second(serve):
    served = await serve()
    conn = await served.raw(connect=False)
    frame = await conn.connect(heartbeat="10,200")
    assert frame.headers["heart-beat"] == "1000,1000"
    conn.close()


async def test_frame_before_connect_gets_error_and_close(serve):
    served = await serve()
    conn = await served.raw(connect=False)
    conn.send(Frame("SUBSCRIBE", {"destination": "d", "id": "1"}))
    frames = await conn.read_until_closed()
    assert [f.command for f in frames] == ["ERROR"]
    assert frames[0].headers["message"] == "Not connected"


BAD_INPUT = {
    "malformed header": (b"SEND\nno colon here\n\n\0", "Malformed frame"),
    "invalid escape": (b"SEND\ndestination:a\\tb\n\n\0", "Malformed frame"),
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "Malformed frame"),
    "SUBSCRIBE without id": (encode(Frame("SUBSCRIBE", {"destination": "d"})), "Missing header"),
    "SUBSCRIBE without destination": (encode(Frame("SUBSCRIBE", {"id": "1"})), "Missing header"),
    "SEND without destination": (encode(Frame("SEND", {}, b"{}")), "Missing header"),
    "UNSUBSCRIBE without id": (encode(Frame("UNSUBSCRIBE", {})), "Missing header"),
    "unknown command": (encode(Frame("FROB", {})), "Unknown command"),
    "oversize frame": (encode(Frame("SEND", {"destination": "d"}, b"x" * 5000)), "Malformed frame"),
    "second CONNECT": (encode(Frame("CONNECT", {"accept-version": "1.2"})), "Already connected"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_frame_gets_error_and_closes_only_that_connection(serve, case):
    data, message = BAD_INPUT[case]
    served = await serve(max_frame_size=4096)
    good = await served.client()
    bad = await served.raw()
    bad.send_bytes(data)
    frames = await bad.read_until_closed()
    assert [f.command for f in frames] == ["ERROR"]
    assert frames[0].headers["message"] == message
    assert frames[0].body  # a readable explanation
    assert await good.call("echo", {"ok": True}) == {"ok": True}
    fresh = await served.client()
    assert await fresh.call("echo", {}) == {}
    await fresh.close()
    await good.close()


async def test_oversize_frame_is_refused_before_its_body_is_sent(serve):
    served = await serve(max_frame_size=64 * 1024)
    bad = await served.raw()
    bad.send_bytes(b"SEND\ndestination:d\ncontent-length:100000000\n\n")
    frames = await bad.read_until_closed()  # the 100 MB body never has to be sent
    assert [f.command for f in frames] == ["ERROR"]
    assert "size limit" in frames[0].body.decode()


async def test_client_sees_server_error_as_stomp_error(serve):
    served = await serve()
    client = await served.client()
    client._write(encode(Frame("SUBSCRIBE", {"destination": "x"})))  # missing id
    with pytest.raises(StompError, match="Missing header"):
        await client.call("sleep", {"seconds": 5})
    await client.close()


async def test_requests_of_one_connection_run_concurrently(serve):
    served = await serve()
    async with await served.client() as client:
        slow = asyncio.create_task(client.call("sleep", {"seconds": 2, "tag": "slow"}))
        await asyncio.sleep(0.05)
        assert await client.call("echo", {"fast": 1}) == {"fast": 1}
        assert not slow.done()  # the fast call did not wait for the slow one
        assert await slow == "slow"


async def test_pending_calls_fail_when_the_connection_drops(serve):
    served = await serve()
    client = await served.client()
    pending = asyncio.create_task(client.call("sleep", {"seconds": 30}))
    await asyncio.sleep(0.2)
    await served.server.close(grace=0.1)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(pending, 10)
    with pytest.raises(ConnectionLost):
        await client.call("echo", {})
    await client.close()


async def test_call_timeout_raises_timeout_error_and_connection_stays_usable(serve):
    served = await serve()
    async with await served.client() as client:
        with pytest.raises(TimeoutError, match="sleep"):
            await client.call("sleep", {"seconds": 3}, timeout=0.2)
        assert await client.call("echo", {"n": 1}) == {"n": 1}


async def test_real_dispatcher_serves_host_ping2(serve):
    class HostPing:
        async def ping2(self) -> bool:
            return True

    executor = Executor(2, 5.0)
    dispatcher = Dispatcher(Schema.load(), executor)
    dispatcher.register("Host", HostPing())
    try:
        served = await serve(dispatcher.handle)
        async with await served.client() as client:
            assert await client.call("Host.ping2") is True
            with pytest.raises(RpcError) as info:
                await client.call("Host.noSuchVerb")
            assert info.value.code == -32601
    finally:
        executor.close()


async def test_sync_client_calls_and_watches_events(serve, pki):
    served = await serve()

    def blocking() -> tuple[object, list[tuple[str, object]]]:
        with SyncClient().connect(
            "127.0.0.1", served.port, ssl_context=pki.client_context()
        ) as client:
            result = client.call("echo", {"sync": True})
            seen = []
            for item in client.events():
                seen.append(item)
                if len(seen) == 2:
                    break
            assert client.call("echo", {"after": 1}) == {"after": 1}
            return result, seen

    job = asyncio.create_task(asyncio.to_thread(blocking))
    n = 0
    while not job.done():  # the thread subscribes at some point; publish until it has two
        n += 1
        served.events.publish(f"|jobs|status|{n}", {"n": n})
        await asyncio.sleep(0.05)
        assert n < 400, "the blocking client never received two events"
    result, seen = await job
    assert result == {"sync": True}
    assert len(seen) == 2
    assert all(method.startswith("|jobs|status|") for method, _ in seen)
    assert seen[1][1]["n"] == seen[0][1]["n"] + 1


async def test_events_bus_is_unhooked_after_close(serve):
    served = await serve()
    bus: EventBus = served.events
    await served.server.close()
    bus.publish("|virt|VM_status|x", {})  # nobody left to deliver to; must not fail
    assert served.server.stats()["events_sent_total"] == 0


async def test_unique_message_ids(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("r", "s")
    for i in range(5):
        conn.send(request_frame("echo", {}, reply_to="r", call_id=str(i)))
    ids = {(await conn.read_frame()).headers["message-id"] for _ in range(5)}
    assert len(ids) == 5
    conn.close()


async def test_subscription_id_reuse_is_refused(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("a", "same")
    conn.send(Frame("SUBSCRIBE", {"destination": "b", "id": "same"}))
    frames = await conn.read_until_closed()
    assert frames[0].command == "ERROR"
    assert served.server.stats()["subscriptions"] == 0  # removed with the connection


async def test_request_without_reply_to_answers_vdsm_legacy_topic(serve):
    served = await serve()
    conn = await served.raw()
    await conn.subscribe("jms.topic.vdsm_responses", "legacy")
    body = orjson.dumps([{"jsonrpc": "2.0", "method": "echo", "params": {}, "id": "l"}])
    conn.send(Frame("SEND", {"destination": "jms.topic.vdsm_irs_requests"}, body))
    frame = await conn.read_frame()
    assert frame.headers["subscription"] == "legacy"
    assert orjson.loads(frame.body)["id"] == "l"
    conn.close()


async def test_any_address_listens_on_ipv4_and_ipv6(pki):
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 here")
    server = StompServer(TinyRpc(), EventBus(), ssl_context=pki.server_context(), rpc=RpcConfig())
    await server.start("::", 0)
    try:
        for address, peer in (("127.0.0.1", "127.0.0.1:"), ("::1", "[::1]:")):
            client = await Client.connect(address, server.port, ssl_context=pki.client_context())
            ctx = await client.call("whoami")
            await client.close()
            assert ctx["peer"].startswith(peer)
    finally:
        await server.close()
