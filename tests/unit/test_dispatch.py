"""The Dispatcher's own contract, on a test-only schema: where verbs run, timeouts, call
context, VDSM error codes, registration checks. (The Host verbs' RPC behaviour is pinned in
test_host_api.py.)"""

from __future__ import annotations

import threading

import orjson
import pytest

from vdsm_py.errors import NoSuchVM, VdsmError
from vdsm_py.executor import Executor
from vdsm_py.rpc.dispatch import CallContext, Dispatcher, current_call
from vdsm_py.rpc.schema import Schema

DOC = {
    "namespace": "Test",
    "available_during_recovery": False,
    "verbs": {
        "whereAsync": {"params": []},
        "whereSync": {"params": []},
        "hang": {"params": []},
        "context": {"params": []},
        "contextSync": {"params": []},
        "lookup": {"params": [{"name": "vmId", "type": "string"}]},
        "meet": {"params": []},
        "echo": {
            "available_during_recovery": True,
            "params": [{"name": "payload", "type": "map", "values": {"type": "any"}}],
        },
    },
}
CTX = CallContext(client_id="c-9", peer="[::1]:5555", peer_subject="CN=engine", flow_id="f-1")


class Impl:
    def __init__(self):
        self.release = threading.Event()
        self.barrier = threading.Barrier(2, timeout=10)

    async def where_async(self):
        return threading.current_thread().name

    def where_sync(self):
        return threading.current_thread().name

    def hang(self):
        self.release.wait(30)
        return "late"

    async def context(self):
        ctx = current_call.get()
        return [ctx.client_id, ctx.flow_id, ctx.peer_subject]

    def context_sync(self):
        ctx = current_call.get()
        return [ctx.client_id, ctx.flow_id]

    async def lookup(self, vm_id):
        raise NoSuchVM()

    def meet(self):
        self.barrier.wait()
        return "met"

    async def echo(self, payload):
        return payload


@pytest.fixture
def impl():
    i = Impl()
    yield i
    i.release.set()


@pytest.fixture
def dispatcher(impl):
    executor = Executor(workers=2, default_timeout=10.0, name="dispatch-test")
    d = Dispatcher(Schema.from_documents([DOC]), executor, call_timeout=0.5)
    d.register("Test", impl)
    yield d
    executor.close()


async def call(d: Dispatcher, method: str, params=None, req_id=1):
    req = {"jsonrpc": "2.0", "method": method, "id": req_id, "params": params or {}}
    return orjson.loads(await d.handle(orjson.dumps([req]), CTX))


async def test_coroutine_verbs_run_on_the_loop_and_plain_ones_on_workers(dispatcher):
    loop_thread = threading.current_thread().name
    assert (await call(dispatcher, "Test.whereAsync"))["result"] == loop_thread
    worker = (await call(dispatcher, "Test.whereSync"))["result"]
    assert worker.startswith("dispatch-test/")


async def test_a_hung_plain_verb_answers_40_and_the_daemon_goes_on(dispatcher, impl):
    error = (await call(dispatcher, "Test.hang"))["error"]
    assert error["code"] == 40
    assert "Test.hang did not finish within 0.5 s" in error["message"]
    assert (await call(dispatcher, "Test.whereAsync"))["result"]
    assert (await call(dispatcher, "Test.whereSync"))["result"]


async def test_call_context_is_visible_to_async_and_plain_verbs(dispatcher):
    assert (await call(dispatcher, "Test.context"))["result"] == ["c-9", "f-1", "CN=engine"]
    assert (await call(dispatcher, "Test.contextSync"))["result"] == ["c-9", "f-1"]
    assert current_call.get() is None  # reset after the call


async def test_domain_errors_carry_their_vdsm_code_and_message(dispatcher):
    error = (await call(dispatcher, "Test.lookup", {"vmId": "x"}))["error"]
    assert error == {"code": 1, "message": "Virtual machine does not exist"}


async def test_requests_of_a_batch_run_concurrently(dispatcher):
    # Each call waits for the other on a barrier: only concurrent execution completes both.
    body = orjson.dumps([
        {"jsonrpc": "2.0", "method": "Test.meet", "id": "a"},
        {"jsonrpc": "2.0", "method": "Test.meet", "id": "b"},
    ])
    responses = orjson.loads(await dispatcher.handle(body, CTX))
    assert [(r["id"], r["result"]) for r in responses] == [("a", "met"), ("b", "met")]


async def test_per_verb_recovery_setting_overrides_the_namespace(dispatcher):
    dispatcher.recovering = True
    assert (await call(dispatcher, "Test.whereAsync"))["error"]["code"] == 99
    payload = {"name": "vm\u00e9", "n": [1, 2.5, None, True]}
    assert (await call(dispatcher, "Test.echo", {"payload": payload}))["result"] == payload


async def test_any_vdsm_error_subclass_maps_to_its_code(impl):
    class Custom(VdsmError):
        code = 358
        default_message = "Storage domain does not exist"

    async def lookup(vm_id):
        raise Custom(f"Storage domain does not exist: {vm_id}")

    impl.lookup = lookup
    executor = Executor(workers=1, name="dispatch-test-2")
    try:
        d = Dispatcher(Schema.from_documents([DOC]), executor)
        d.register("Test", impl)
        error = (await call(d, "Test.lookup", {"vmId": "sd-1"}))["error"]
    finally:
        executor.close()
    assert error == {"code": 358, "message": "Storage domain does not exist: sd-1"}


def test_registration_refuses_unknown_namespaces_empty_impls_and_double_binding(impl):
    executor = Executor(workers=1, name="dispatch-test-3")
    try:
        d = Dispatcher(Schema.from_documents([DOC]), executor)
        with pytest.raises(ValueError, match="not in the schema"):
            d.register("Nope", impl)
        with pytest.raises(ValueError, match="implements no verb"):
            d.register("Test", object())
        d.register("Test", impl)
        with pytest.raises(ValueError, match="bound twice"):
            d.register("Test", impl)
        d.check_complete()
    finally:
        executor.close()


def test_check_complete_names_unimplemented_verbs():
    class Partial:
        async def echo(self, payload):
            return payload

    executor = Executor(workers=1, name="dispatch-test-4")
    try:
        d = Dispatcher(Schema.from_documents([DOC]), executor)
        assert d.register("Test", Partial()) == ["Test.echo"]
        with pytest.raises(ValueError, match="Test.hang") as exc:
            d.check_complete()
        assert "Test.echo" not in str(exc.value)
    finally:
        executor.close()


@pytest.mark.parametrize(
    "method, params, req_id",
    [
        ("Test.echo", {"payload": {"a": [1, "x"], "b": None}}, 1),
        ("Test.echo", {"payload": {}}, None),
        ("Test.echo", {"payload": {}}, "id-7"),
        ("Test.lookup", {"vmId": "x"}, 2),  # a domain error: its VDSM code
        ("Test.echo", {"payload": 5}, 3),  # a wrong type: 91
        ("Test.echo", {"payload": {}, "bogus": 1}, 4),  # an unknown parameter
        ("Test.echo", {}, 5),  # a missing parameter
    ],
)
async def test_a_single_call_is_answered_byte_for_byte_as_in_a_batch(
    dispatcher, method, params, req_id
):
    # A lone call (or VDSM's batch of one) takes the dispatcher's direct path; in a batch
    # beside a notification it goes through jsonrpcserver's pipeline: same answer.
    request = {"jsonrpc": "2.0", "method": method, "id": req_id, "params": params}
    notification = {"jsonrpc": "2.0", "method": "Test.echo", "params": {"payload": {}}}
    alone = await dispatcher.handle(orjson.dumps(request), CTX)
    batch_of_one = await dispatcher.handle(orjson.dumps([request]), CTX)
    beside = await dispatcher.handle(orjson.dumps([request, notification]), CTX)
    assert alone == batch_of_one == beside
    assert orjson.loads(alone)["id"] == req_id
