"""VDSM's stats hook points on VMs: ``before/after_get_vm_stats`` (``VM.getStats``) and
``before/after_get_all_vm_stats`` (``Host.getAllVmStats``), with real hook scripts run by
the real HookRunner, through the real Dispatcher, on libvirt's test driver.

VDSM's contract: the ``before_*`` points get an empty JSON document and their errors fail
the call (1500); the ``after_*`` points get the list of stats records, may rewrite it, and
their errors are only logged. With no scripts installed the verbs cost nothing extra
(``Host.getAllVmStats`` still answers with its pre-encoded JSON).
"""

from __future__ import annotations

import json

import orjson
import pytest

from tests.integration.virt_support import RpcError, VirtHarness, plain_vm
from tests.unit.hooks_support import install, py, sh
from vdsm_py.config import VirtConfig
from vdsm_py.hooks import HookRunner

CONFIG = VirtConfig(libvirt_uri="test:///default", powering_up_timeout=0.2,
                    stats_interval=3600, guest_agent_interval=0)
HOOK_ERROR = 1500

# Adds "hooked": "<script name>" to every record and records what it was handed.
TAG_RECORDS = """
import json, os
import hooking

data = hooking.read_json()
with open(os.environ["SEEN_FILE"], "a") as f:
    f.write(json.dumps(data) + "\\n")
for record in data:
    record["hooked"] = os.path.basename(__file__)
hooking.write_json(data)
"""


@pytest.fixture
async def hooked(tmp_path, monkeypatch):
    root = tmp_path / "hooks"
    root.mkdir()
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("SEEN_FILE", str(seen))
    h = VirtHarness(CONFIG, hooks=HookRunner(root, timeout=10))
    await h.start()
    h.hook_root = root  # type: ignore[attr-defined]
    h.seen = seen  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        await h.close()


async def _running(h: VirtHarness) -> str:
    vm_id, params = plain_vm()
    await h.call("VM.create", vmID=vm_id, vmParams=params)
    await h.wait_status(vm_id, "Up")
    return vm_id


def _seen(h: VirtHarness) -> list:
    return [json.loads(line) for line in h.seen.read_text().splitlines()]  # type: ignore


async def test_after_get_vm_stats_rewrites_the_record(hooked):
    vm_id = await _running(hooked)
    install(hooked.hook_root, "after_get_vm_stats", "10_tag", py(TAG_RECORDS))
    (stats,) = await hooked.call("VM.getStats", vmID=vm_id)
    assert stats["hooked"] == "10_tag"
    assert stats["vmId"] == vm_id and stats["status"] == "Up"
    (handed,) = _seen(hooked)
    assert [r["vmId"] for r in handed] == [vm_id]


async def test_failing_before_get_vm_stats_fails_the_call(hooked):
    vm_id = await _running(hooked)
    install(hooked.hook_root, "before_get_vm_stats", "10_no",
            sh("echo 'stats are closed' >&2\nexit 2\n"))
    with pytest.raises(RpcError) as err:
        await hooked.call("VM.getStats", vmID=vm_id)
    assert err.value.code == HOOK_ERROR and "stats are closed" in err.value.message


async def test_before_get_vm_stats_gets_an_empty_document(hooked, tmp_path):
    vm_id = await _running(hooked)
    copy = tmp_path / "before.json"
    install(hooked.hook_root, "before_get_vm_stats", "10_copy",
            sh(f'cp "$_hook_json" {copy}\n'))
    await hooked.call("VM.getStats", vmID=vm_id)
    assert json.loads(copy.read_text()) == {}


async def test_unknown_vm_is_refused_before_any_hook_runs(hooked, tmp_path):
    marker = tmp_path / "ran"
    install(hooked.hook_root, "before_get_vm_stats", "10_mark", sh(f"touch {marker}\n"))
    with pytest.raises(RpcError) as err:
        await hooked.call("VM.getStats", vmID="3c9a1c3e-5e0e-4a4c-9a43-000000000001")
    assert err.value.code == 1 and not marker.exists()


async def test_failing_after_get_vm_stats_keeps_the_stats(hooked):
    vm_id = await _running(hooked)
    install(hooked.hook_root, "after_get_vm_stats", "10_broken",
            sh('echo garbage > "$_hook_json"\nexit 1\n'))
    (stats,) = await hooked.call("VM.getStats", vmID=vm_id)
    assert stats["vmId"] == vm_id and "hooked" not in stats


async def test_after_get_vm_stats_leaving_no_list_is_ignored(hooked):
    vm_id = await _running(hooked)
    install(hooked.hook_root, "after_get_vm_stats", "10_dict",
            sh('echo \'{"not": "a list"}\' > "$_hook_json"\n'))
    (stats,) = await hooked.call("VM.getStats", vmID=vm_id)
    assert stats["vmId"] == vm_id and stats["status"] == "Up"


async def test_after_get_all_vm_stats_rewrites_every_record(hooked):
    ids = {await _running(hooked) for _ in range(3)}
    install(hooked.hook_root, "after_get_all_vm_stats", "20_tag", py(TAG_RECORDS))
    known = {vm.id for vm in hooked.manager.vms.values()}  # ours + the driver's own "test"
    listed = await hooked.call("Host.getAllVmStats")
    assert ids <= known and {r["vmId"] for r in listed} == known
    assert {r["hooked"] for r in listed} == {"20_tag"}
    (handed,) = _seen(hooked)
    assert {r["vmId"] for r in handed} == known and all("statusTime" in r for r in handed)


async def test_failing_before_get_all_vm_stats_fails_the_call(hooked):
    await _running(hooked)
    install(hooked.hook_root, "before_get_all_vm_stats", "10_no", sh("exit 2\n"))
    with pytest.raises(RpcError) as err:
        await hooked.call("Host.getAllVmStats")
    assert err.value.code == HOOK_ERROR


async def test_without_scripts_all_stats_stay_pre_encoded(hooked):
    vm_id = await _running(hooked)
    (hooked.hook_root / "after_get_all_vm_stats").mkdir()  # an empty directory: no script
    answer = await hooked.manager.all_stats()
    assert isinstance(answer, orjson.Fragment)
    encoded = [r["vmId"] for r in orjson.loads(orjson.dumps(answer))]
    assert vm_id in encoded
    assert [r["vmId"] for r in await hooked.call("Host.getAllVmStats")] == encoded


async def test_after_get_vm_stats_chain_runs_in_lexical_order(hooked):
    vm_id = await _running(hooked)
    install(hooked.hook_root, "after_get_vm_stats", "10_tag", py(TAG_RECORDS))
    install(hooked.hook_root, "after_get_vm_stats", "20_tag", py(TAG_RECORDS))
    (stats,) = await hooked.call("VM.getStats", vmID=vm_id)
    assert stats["hooked"] == "20_tag"  # lexical order: the last script wins
    assert len(_seen(hooked)) == 2
