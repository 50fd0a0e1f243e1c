"""The Host verbs driven through the real Dispatcher: JSON bytes in, JSON bytes out.

These pin issue 2's RPC contract as a VDSM client sees it: results, and the error codes for
bad JSON (-32700), invalid requests (-32600), unknown methods (-32601), missing (11) and
invalid (91) parameters, recovery (99) and unexpected failures (100, no traceback).
The schema is the repository's own, plus a tiny test-only namespace (``Probe``) for what the
Host verbs cannot show (they take no parameters and answer during recovery).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
import pytest
import yaml

from vdsm_py.api.host import HostApi
from vdsm_py.config import load as load_config
from vdsm_py.executor import Executor
from vdsm_py.host.caps import HostCapabilities
from vdsm_py.host.hardware import HardwareInfo
from vdsm_py.host.stats import HostStatsSampler
from vdsm_py.rpc.dispatch import CallContext, Dispatcher
from vdsm_py.rpc.schema import SCHEMA_DIR, Schema

CTX = CallContext(client_id="client-1", peer="127.0.0.1:40000", flow_id="flow-42")

PROBE_DOC = {
    "namespace": "Probe",
    "available_during_recovery": False,
    "verbs": {
        "echo": {
            "params": [
                {"name": "vmId", "type": "string", "format": "uuid"},
                {"name": "count", "type": "int", "min": 0, "default": 1},
            ],
            "return": {"type": "map"},
        },
    },
}
VM_ID = "8b8f6b2c-4d46-4b0e-9c4a-6f0e3a7c2d11"


class Probe:
    async def echo(self, vm_id: str, count: int) -> dict:
        return {"vmId": vm_id, "count": count}


class Clock:
    def __init__(self):
        self.now = 500.0

    def __call__(self):
        return self.now


async def never(seconds: float) -> None:
    """The sampler's sleep in these tests: sampling happens only when a test asks."""
    await asyncio.Event().wait()


def schema_docs() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.yml"))]


@dataclass
class Rpc:
    dispatcher: Dispatcher
    api: HostApi
    sampler: HostStatsSampler
    clock: Clock

    async def raw(self, body: bytes | str) -> dict | list | None:
        out = await self.dispatcher.handle(body, CTX)
        return None if out is None else orjson.loads(out)

    async def call(self, method: str, params=None, *, req_id="req-1") -> dict:
        """One call the way VDSM's client sends it: a batch of one request."""
        request = {"jsonrpc": "2.0", "method": method, "id": req_id}
        if params is not None:
            request["params"] = params
        return await self.raw(orjson.dumps([request]))

    async def result(self, method: str, params=None):
        response = await self.call(method, params)
        assert "error" not in response, response
        return response["result"]

    async def error(self, method: str, params=None) -> dict:
        response = await self.call(method, params)
        assert "result" not in response, response
        return response["error"]


@pytest.fixture
async def rpc(tmp_path):
    executor = Executor(workers=2, default_timeout=10.0, name="api-test")
    clock = Clock()
    sampler = HostStatsSampler(executor, interval=15.0, clock=clock, sleep=never)
    await sampler.start()
    api = HostApi(HostCapabilities(state_dir=tmp_path), sampler, HardwareInfo())
    dispatcher = Dispatcher(Schema.from_documents([*schema_docs(), PROBE_DOC]), executor,
                            call_timeout=10.0)
    dispatcher.register("Host", api)
    dispatcher.register("Probe", Probe())
    yield Rpc(dispatcher, api, sampler, clock)
    await sampler.stop()
    executor.close()


def conforms(rpc: Rpc, method: str, result) -> None:
    """The result matches the return type the schema documents (raises 91 if not)."""
    schema = rpc.dispatcher.schema
    schema.checker(schema.verb(method).returns.spec)(result, f"{method} result")


# -- results ----------------------------------------------------------------------------------


async def test_ping2_answers_true_as_a_single_object_to_a_batch_of_one(rpc):
    assert await rpc.call("Host.ping2", {}) == {"jsonrpc": "2.0", "result": True,
                                               "id": "req-1"}


async def test_ping2_without_params_and_without_batch(rpc):
    response = await rpc.raw(b'{"jsonrpc": "2.0", "method": "Host.ping2", "id": 7}')
    assert response == {"jsonrpc": "2.0", "result": True, "id": 7}


async def test_confirm_connectivity_is_true_and_seen_as_client_activity(rpc):
    seen = []
    rpc.dispatcher.on_activity(seen.append)
    assert await rpc.result("Host.confirmConnectivity") is True
    assert seen == [CTX]


async def test_get_stats_has_vdsm_shape_and_conforms_to_the_schema(rpc):
    stats = await rpc.result("Host.getStats")
    conforms(rpc, "Host.getStats", stats)
    for key in ("cpuUser", "cpuSys", "cpuIdle", "cpuLoad", "memFree", "memAvailable",
                "memUsed", "memCommitted", "swapTotal", "swapFree", "network", "disks",
                "bootTime", "elapsedTime", "sampleInterval", "loadAverage", "dateTime"):
        assert key in stats, key
    for key in ("cpuUser", "cpuSys", "cpuIdle", "cpuLoad", "memUsed", "bootTime"):
        float(stats[key])  # numbers in strings, as VDSM sends them
    lo = stats["network"]["lo"]
    assert set(lo) >= {"name", "rx", "tx", "rxRate", "txRate", "rxBytesPerSec",
                       "txBytesPerSec", "state", "speed", "sampleTime"}
    assert lo["name"] == "lo"


async def test_get_stats_reports_rates_once_a_second_sample_exists(rpc):
    assert (await rpc.result("Host.getStats"))["sampleInterval"] == 0
    rpc.clock.now += 15.0
    await rpc.sampler.sample_now()
    stats = await rpc.result("Host.getStats")
    assert stats["sampleInterval"] == 15.0
    assert stats["elapsedTime"] == "15"


async def test_get_stats_includes_what_other_domains_contribute(rpc):
    rpc.api.add_stats_contributor(lambda: {"vmCount": 3, "vmActive": 2})
    stats = await rpc.result("Host.getStats")
    assert (stats["vmCount"], stats["vmActive"]) == (3, 2)
    conforms(rpc, "Host.getStats", stats)


async def test_get_capabilities_has_vdsm_keys_and_conforms_to_the_schema(rpc):
    caps = await rpc.result("Host.getCapabilities")
    conforms(rpc, "Host.getCapabilities", caps)
    for key in ("cpuModel", "cpuFlags", "cpuCores", "cpuSockets", "cpuThreads", "cpuSpeed",
                "memSize", "operatingSystem", "packages2", "software_version", "hooks",
                "uuid", "supportedENGINEs", "clusterLevels", "numaNodes", "hostname"):
        assert key in caps, key
    assert set(caps["operatingSystem"]) >= {"name", "version", "release"}
    assert "kernel" in caps["packages2"] and "vdsm" in caps["packages2"]
    assert caps == await rpc.result("Host.getCapabilities")


async def test_get_hardware_info_conforms_and_matches_dmi(rpc):
    info = await rpc.result("Host.getHardwareInfo")
    conforms(rpc, "Host.getHardwareInfo", info)
    assert info == HardwareInfo().report()


async def test_host_verbs_answer_during_recovery(rpc):
    rpc.dispatcher.recovering = True
    assert await rpc.result("Host.ping2") is True
    assert "cpuUser" in await rpc.result("Host.getStats")


async def test_build_wires_the_configured_uuid_and_state_dir(rpc, tmp_path):
    config = load_config(None, {"daemon": {"state_dir": tmp_path / "state"},
                                "host": {"uuid": VM_ID}})
    api = HostApi.build(config, rpc.sampler)
    await asyncio.get_running_loop().run_in_executor(None, api.warm_up)
    assert (await api.get_capabilities())["uuid"] == VM_ID
    assert api.get_hardware_info() == HardwareInfo().report()


# -- batches and notifications ------------------------------------------------------------------


async def test_batch_answers_every_request_in_order_and_skips_notifications(rpc):
    body = orjson.dumps([
        {"jsonrpc": "2.0", "method": "Host.ping2", "id": 1},
        {"jsonrpc": "2.0", "method": "Host.ping2"},  # a notification: no answer
        {"jsonrpc": "2.0", "method": "Host.nope", "id": 2},
        {"jsonrpc": "2.0", "method": "Probe.echo", "params": {}, "id": 3},
    ])
    responses = await rpc.raw(body)
    assert [r["id"] for r in responses] == [1, 2, 3]
    assert responses[0]["result"] is True
    assert responses[1]["error"]["code"] == -32601
    assert responses[2]["error"]["code"] == 11


async def test_notifications_alone_get_no_response(rpc):
    assert await rpc.raw(b'{"jsonrpc": "2.0", "method": "Host.ping2"}') is None
    assert await rpc.raw(b'[{"jsonrpc": "2.0", "method": "Host.ping2"}]') is None


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, params, name", [
    ("Host.ping2", {"x": 1}, "x"),
    ("Host.getStats", {"verbose": True}, "verbose"),
    ("Probe.echo", {"vmId": "not-a-uuid"}, "vmId"),
    ("Probe.echo", {"vmId": VM_ID, "count": "3"}, "count"),
    ("Probe.echo", {"vmId": VM_ID, "count": -1}, "count"),
])
async def test_wrong_parameters_are_91_naming_the_parameter(rpc, method, params, name):
    error = await rpc.error(method, params)
    assert error["code"] == 91
    assert f"Invalid parameter: {name}:" in error["message"]


async def test_wrong_type_says_what_was_expected(rpc):
    error = await rpc.error("Probe.echo", {"vmId": VM_ID, "count": "3"})
    assert "expected an integer, got a string ('3')" in error["message"]


async def test_missing_parameter_is_11_naming_it(rpc):
    error = await rpc.error("Probe.echo", {"count": 2})
    assert error == {"code": 11, "message": "Missing required parameter: vmId"}


async def test_valid_parameters_reach_the_verb_with_defaults(rpc):
    assert await rpc.result("Probe.echo", {"vmId": VM_ID}) == {"vmId": VM_ID, "count": 1}


async def test_positional_parameters_are_refused(rpc):
    error = await rpc.error("Host.ping2", [1])
    assert error["code"] == -32602


@pytest.mark.parametrize("method", ["Host.noSuchVerb", "Nowhere.ping2", "ping2", ""])
async def test_unknown_method_is_32601(rpc, method):
    error = await rpc.error(method)
    assert error["code"] == -32601


@pytest.mark.parametrize("body", [
    b'{"jsonrpc": "2.0", "method": "Host.ping2", "id": 1',
    b"not json at all",
    b"",
    b'\xff\xfe{"jsonrpc": "2.0"}',
])
async def test_bad_json_is_32700_with_null_id(rpc, body):
    response = await rpc.raw(body)
    assert response["error"]["code"] == -32700
    assert response["id"] is None


@pytest.mark.parametrize("request_obj, why", [
    ({"jsonrpc": "1.0", "method": "Host.ping2", "id": 1}, "jsonrpc must be '2.0'"),
    ({"method": "Host.ping2", "id": 1}, "jsonrpc must be '2.0'"),
    ({"jsonrpc": "2.0", "id": 1}, "method must be a string"),
    ({"jsonrpc": "2.0", "method": 5, "id": 1}, "method must be a string"),
    ({"jsonrpc": "2.0", "method": "Host.ping2", "params": "x", "id": 1}, "params must be"),
    ({"jsonrpc": "2.0", "method": "Host.ping2", "id": {"a": 1}}, "id must be"),
    ([], "empty batch"),
    ([1], "request is not an object"),
    ("Host.ping2", "request is not an object"),
    (42, "request is not an object"),
])
async def test_invalid_request_is_32600_and_says_why(rpc, request_obj, why):
    response = await rpc.raw(orjson.dumps(request_obj))
    assert response["error"]["code"] == -32600
    assert why in response["error"]["data"]
    assert response["id"] is None


async def test_unexpected_exception_is_100_without_traceback_and_is_logged(rpc, caplog):
    def broken():
        raise KeyError("secret-internal-detail")

    rpc.api.add_stats_contributor(broken)
    with caplog.at_level(logging.ERROR, logger="vdsm_py.rpc"):
        error = await rpc.error("Host.getStats")
    assert error["code"] == 100
    assert "General Exception" in error["message"]
    for leak in ("Traceback", "secret-internal-detail", "KeyError", ".py"):
        assert leak not in error["message"]
    assert "data" not in error
    record = next(r for r in caplog.records if "Host.getStats" in r.getMessage())
    assert record.exc_info and "flow-42" in record.getMessage()


async def test_domain_error_keeps_its_vdsm_code(rpc, tmp_path):
    executor = rpc.dispatcher.executor
    unstarted = HostStatsSampler(executor, interval=15.0, sleep=never)
    rpc.api.sampler = unstarted
    error = await rpc.error("Host.getStats")
    assert error == {"code": 40, "message": "Host statistics are not sampled yet"}


async def test_verbs_not_available_during_recovery_answer_99(rpc):
    rpc.dispatcher.recovering = True
    error = await rpc.error("Probe.echo", {"vmId": VM_ID})
    assert error == {"code": 99, "message": "Recovering from crash or Initializing"}
    rpc.dispatcher.recovering = False
    assert await rpc.result("Probe.echo", {"vmId": VM_ID}) == {"vmId": VM_ID, "count": 1}


async def test_recovery_is_checked_before_parameters(rpc):
    rpc.dispatcher.recovering = True
    assert (await rpc.error("Probe.echo", {}))["code"] == 99


# -- hooks on capabilities and stats --------------------------------------------------------


def _script(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


async def test_caps_hooks_run_and_installed_scripts_are_listed(rpc, tmp_path):
    from vdsm_py.hooks import HookRunner

    root = tmp_path / "hooks"
    marker = tmp_path / "before-ran"
    _script(root / "before_get_caps" / "10_mark", f"#!/bin/sh\ntouch {marker}\n")
    _script(
        root / "after_get_caps" / "10_add",
        "#!/usr/bin/env python3\nimport hooking\ncaps = hooking.read_json()\n"
        "caps['addedByHook'] = 'yes'\nhooking.write_json(caps)\n",
    )
    config = load_config(None, {"daemon": {"state_dir": tmp_path / "state"},
                                "hooks": {"dir": root}})
    api = HostApi.build(config, rpc.sampler, hooks=HookRunner(root))
    await asyncio.get_running_loop().run_in_executor(None, api.warm_up)
    caps = await api.get_capabilities()
    assert marker.exists()
    assert caps["addedByHook"] == "yes"
    assert set(caps["hooks"]) == {"before_get_caps", "after_get_caps"}
    assert "checksum" in caps["hooks"]["after_get_caps"]["10_add"]


async def test_after_get_stats_hook_may_rewrite_stats(rpc, tmp_path):
    from vdsm_py.hooks import HookRunner

    root = tmp_path / "hooks"
    _script(
        root / "after_get_stats" / "10_add",
        "#!/usr/bin/env python3\nimport hooking\nstats = hooking.read_json()\n"
        "stats['fromHook'] = 1\nhooking.write_json(stats)\n",
    )
    config = load_config(None, {"daemon": {"state_dir": tmp_path / "state"}})
    api = HostApi.build(config, rpc.sampler, hooks=HookRunner(root))
    stats = await api.get_stats()
    assert stats["fromHook"] == 1 and "cpuUser" in stats
