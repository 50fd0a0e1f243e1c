"""HookRunner with real shell and Python scripts in temporary hook directories."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from lxml import etree

from tests.unit.hooks_support import DOMAIN, install, py, sh
from vdsm_py.errors import HookError
from vdsm_py.hooks import HOOKING_PATH, HookRunner


@pytest.fixture
def run_dir(root: Path) -> Path:
    return root.parent / "run"


@pytest.fixture
def run_dir_runner(root: Path, tmp_dir: Path, run_dir: Path) -> HookRunner:
    """A runner like ``runner`` that also has a run directory (for launch flags)."""
    return HookRunner(root, timeout=30, tmp_dir=tmp_dir, run_dir=run_dir)


# --- documents in and out -------------------------------------------------------------


async def test_python_script_rewrites_domain_xml_through_hooking(root, runner):
    install(
        root,
        "before_vm_start",
        "50_add",
        py("""
        import hooking
        doc = hooking.read_domxml()
        el = doc.createElement('description')
        el.appendChild(doc.createTextNode('hooked'))
        doc.documentElement.appendChild(el)
        hooking.write_domxml(doc)
    """),
    )
    out = await runner.run_xml("before_vm_start", DOMAIN, vm_id="vm-1")
    assert etree.fromstring(out).findtext("description") == "hooked"
    assert not out.startswith("<?xml"), "the declaration minidom writes is stripped"


async def test_shell_script_rewrites_device_xml(root, runner):
    install(
        root,
        "before_device_create",
        "10_swap",
        sh("""
        printf '<interface type="network"><source network="n1"/></interface>' > "$_hook_domxml"
    """),
    )
    out = await runner.run_xml("before_device_create", "<interface type='bridge'/>")
    assert etree.fromstring(out).find("source").get("network") == "n1"


async def test_scripts_run_in_lexical_order_each_seeing_the_previous_output(root, runner):
    for name in ("2_b", "10_a", "30_c"):
        install(
            root,
            "before_vm_start",
            name,
            sh(f"""
            echo {name} >> "$order_log"
            sed -i 's|</name>|-{name}</name>|' "$_hook_domxml"
        """),
        )
    log_file = root.parent / "order.log"
    out = await runner.run_xml("before_vm_start", DOMAIN, custom={"order_log": str(log_file)})
    assert log_file.read_text().split() == ["10_a", "2_b", "30_c"]
    assert etree.fromstring(out).findtext("name") == "vm1-10_a-2_b-30_c"


async def test_unchanged_document_is_returned_as_given(root, runner):
    install(root, "before_vm_start", "noop", sh("exit 0\n"))
    xml = "<?xml version='1.0'?>\n" + DOMAIN
    assert await runner.run_xml("before_vm_start", xml) == xml


async def test_json_hook_rewrites_the_document(root, runner):
    install(
        root,
        "after_get_caps",
        "50_tag",
        py("""
        import hooking
        caps = hooking.read_json()
        caps['hooked'] = caps['cpuCores'] * 2
        hooking.write_json(caps)
    """),
    )
    out = await runner.run_json("after_get_caps", {"cpuCores": "4x", "n": [1, 2]})
    assert out == {"cpuCores": "4x", "n": [1, 2], "hooked": "4x4x"}


async def test_run_without_document_hands_an_empty_domxml_file(root, runner):
    seen = root.parent / "seen"
    install(
        root,
        "before_vdsm_start",
        "50_probe",
        sh(f"""
        test -f "$_hook_domxml" && wc -c < "$_hook_domxml" > {seen}
    """),
    )
    await runner.run("before_vdsm_start")
    assert seen.read_text().strip() == "0"


# --- exit codes -----------------------------------------------------------------------


async def test_exit_1_fails_the_call_but_the_chain_goes_on(root, runner):
    log_file = root.parent / "ran"
    install(root, "before_vm_start", "10_fail", sh("echo 'disk quota gone' >&2; exit 1\n"))
    install(root, "before_vm_start", "20_next", sh(f"echo next >> {log_file}\n"))
    with pytest.raises(HookError) as info:
        await runner.run_xml("before_vm_start", DOMAIN, vm_id="vm-1")
    assert info.value.code == 1500
    assert "10_fail" in info.value.message and "disk quota gone" in info.value.message
    assert "exit code 1" in info.value.message
    assert log_file.read_text() == "next\n"
    assert info.value.data == [
        {"script": "10_fail", "reason": "exit code 1", "stderr": "disk quota gone\n"}
    ]


async def test_exit_2_stops_the_chain(root, runner):
    log_file = root.parent / "ran"
    install(
        root,
        "before_vm_start",
        "10_stop",
        py("""
        import hooking
        hooking.exit_hook('no way')
    """),
    )
    install(root, "before_vm_start", "20_never", sh(f"echo never >> {log_file}\n"))
    with pytest.raises(HookError, match=r"10_stop \(exit code 2\): no way"):
        await runner.run_xml("before_vm_start", DOMAIN)
    assert not log_file.exists()


async def test_every_failed_script_is_named_in_the_error(root, runner):
    install(root, "before_vm_start", "10_a", sh("echo first >&2; exit 1\n"))
    install(root, "before_vm_start", "20_b", sh("echo second >&2; exit 1\n"))
    with pytest.raises(HookError) as info:
        await runner.run_xml("before_vm_start", DOMAIN)
    assert "10_a (exit code 1): first" in info.value.message
    assert "20_b (exit code 1): second" in info.value.message


async def test_other_exit_codes_are_warnings_not_errors(root, runner, caplog):
    install(root, "before_vm_start", "10_odd", sh("echo odd >&2; exit 3\n"))
    install(
        root,
        "before_vm_start",
        "20_edit",
        sh("""
        sed -i 's|vm1|vm2|' "$_hook_domxml"
    """),
    )
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        out = await runner.run_xml("before_vm_start", DOMAIN)
    assert etree.fromstring(out).findtext("name") == "vm2"
    assert any("unexpected exit code 3" in r.getMessage() for r in caplog.records)


async def test_errors_are_logged_not_raised_when_the_caller_says_so(root, runner, caplog):
    install(root, "before_vm_start", "10_edit", sh("sed -i 's|vm1|vm2|' \"$_hook_domxml\"\n"))
    install(root, "before_vm_start", "20_fail", sh("echo broken >&2; exit 1\n"))
    with caplog.at_level(logging.ERROR, logger="vdsm_py.hooks"):
        out = await runner.run_xml("before_vm_start", DOMAIN, raise_on_error=False)
    assert etree.fromstring(out).findtext("name") == "vm2"
    assert any(
        "20_fail" in r.getMessage() and "broken" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    )


@pytest.mark.parametrize(
    ("point", "raises"),
    [
        ("before_vm_start", True),
        ("before_nic_hotplug", True),
        ("after_vm_start", False),
        ("after_nic_hotplug_fail", False),
        ("before_vm_destroy", False),
        ("before_vm_set_ticket", False),
    ],
)
async def test_default_error_policy_follows_vdsm(root, runner, point, raises):
    install(root, point, "fail", sh("exit 1\n"))
    if raises:
        with pytest.raises(HookError):
            await runner.run_xml(point, DOMAIN)
    else:
        assert await runner.run_xml(point, DOMAIN) == DOMAIN


async def test_after_hooks_fail_only_when_the_caller_insists(root, runner):
    install(root, "after_get_stats", "fail", sh("exit 2\n"))
    assert await runner.run_json("after_get_stats", {"a": 1}) == {"a": 1}
    with pytest.raises(HookError):
        await runner.run_json("after_get_stats", {"a": 1}, raise_on_error=True)


# --- environment ----------------------------------------------------------------------


async def test_environment_carries_custom_properties_vm_id_and_hooking(
    root, tmp_dir, run_dir, run_dir_runner
):
    dump = root.parent / "env.json"
    install(
        root,
        "before_vm_start",
        "env",
        py(f"""
        import json, os
        import hooking
        env = dict(os.environ)
        env['hooking_file'] = hooking.__file__
        json.dump(env, open({str(dump)!r}, 'w'))
    """),
    )
    await run_dir_runner.run_xml(
        "before_vm_start",
        DOMAIN,
        vm_id="vm-42",
        custom={"sap_agent": "true", "shared": "from-vm", "n": 3},
        env={"nic_prop": "x y", "shared": "from-device"},
    )
    env = json.loads(dump.read_text())
    assert env["vmId"] == "vm-42"
    assert env["sap_agent"] == "true" and env["n"] == "3" and env["nic_prop"] == "x y"
    assert env["shared"] == "from-vm", "VM custom properties win, as in VDSM"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(HOOKING_PATH)
    assert Path(env["hooking_file"]) == HOOKING_PATH / "hooking.py"
    assert env["_hook_run_dir"] == str(run_dir)
    assert Path(env["_hook_domxml"]).parent == tmp_dir
    assert env["PATH"] == os.environ["PATH"]


async def test_custom_properties_cannot_override_contract_variables(root, runner, caplog):
    dump = root.parent / "env.json"
    install(
        root,
        "before_vm_start",
        "env",
        py(f"""
        import json, os
        json.dump(dict(os.environ), open({str(dump)!r}, 'w'))
    """),
    )
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        await runner.run_xml(
            "before_vm_start",
            DOMAIN,
            vm_id="vm-1",
            custom={
                "_hook_domxml": "/etc/passwd",
                "vmId": "other",
                "LD_PRELOAD": "/x.so",
                "PATH": "/evil",
                "bad=name": "v",
                "ok": "yes",
            },
        )
    env = json.loads(dump.read_text())
    assert env["_hook_domxml"] != "/etc/passwd"
    assert env["vmId"] == "vm-1"
    assert "LD_PRELOAD" not in env or env["LD_PRELOAD"] != "/x.so"
    assert env["PATH"] == os.environ["PATH"]
    assert env["ok"] == "yes"
    refused = [r.getMessage() for r in caplog.records if "not passing" in r.getMessage()]
    assert len(refused) == 5


async def test_json_points_get_hook_json_not_hook_domxml(root, runner):
    dump = root.parent / "env.json"
    install(
        root,
        "before_get_caps",
        "env",
        py(f"""
        import json, os
        json.dump(dict(os.environ), open({str(dump)!r}, 'w'))
    """),
    )
    await runner.run_json("before_get_caps", {})
    env = json.loads(dump.read_text())
    assert "_hook_json" in env and "_hook_domxml" not in env


# --- bad output and cleanliness --------------------------------------------------------


async def test_invalid_xml_from_a_script_is_a_clear_error(root, runner, tmp_dir):
    install(root, "before_vm_start", "10_ok", sh("exit 0\n"))
    install(root, "before_vm_start", "20_break", sh("echo '<domain><name>' > \"$_hook_domxml\"\n"))
    with pytest.raises(HookError) as info:
        await runner.run_xml("before_vm_start", DOMAIN)
    message = info.value.message
    assert "before_vm_start hook scripts (10_ok, 20_break) left invalid XML" in message
    assert "line" in message
    assert list(tmp_dir.iterdir()) == []


async def test_invalid_xml_keeps_the_original_where_errors_do_not_fail(root, runner):
    install(root, "after_vm_start", "break", sh("echo 'not xml' > \"$_hook_domxml\"\n"))
    assert await runner.run_xml("after_vm_start", DOMAIN) == DOMAIN


async def test_invalid_json_from_a_script_is_a_clear_error(root, runner):
    install(root, "before_get_caps", "break", sh("echo '{nope' > \"$_hook_json\"\n"))
    with pytest.raises(HookError, match="before_get_caps hook scripts .* left invalid JSON"):
        await runner.run_json("before_get_caps", {})


async def test_script_removing_the_document_is_an_error(root, runner):
    install(root, "before_vm_start", "rm", sh('rm -f "$_hook_domxml"\n'))
    with pytest.raises(HookError, match="removed the _hook_domxml file"):
        await runner.run_xml("before_vm_start", DOMAIN)


@pytest.mark.parametrize("ending", ["exit 0", "exit 1", "exit 2", "kill -KILL $$"])
async def test_temporary_files_are_always_removed(root, runner, tmp_dir, ending):
    record = root.parent / "path"
    install(
        root,
        "before_vm_start",
        "rec",
        sh(f"""
        echo "$_hook_domxml" > {record}
        {ending}
    """),
    )
    try:
        await runner.run_xml("before_vm_start", DOMAIN)
    except HookError:
        pass
    data_file = Path(record.read_text().strip())
    assert data_file.parent == tmp_dir
    assert not data_file.exists()
    assert list(tmp_dir.iterdir()) == []


# --- nothing to do costs nothing -------------------------------------------------------


async def test_no_scripts_means_no_process_and_no_temporary_file(
    root, runner, tmp_dir, monkeypatch
):
    async def forbidden(*args, **kwargs):
        raise AssertionError("a process was spawned")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", forbidden)
    (root / "before_vm_cont").mkdir()
    install(root, "before_vm_pause", "README", "not a script\n", mode=0o644)
    assert await runner.run_xml("before_vm_start", DOMAIN) == DOMAIN  # no directory
    assert await runner.run_xml("before_vm_cont", DOMAIN) == DOMAIN  # empty directory
    assert await runner.run_xml("before_vm_pause", DOMAIN) == DOMAIN  # nothing runnable
    data = {"x": 1}
    assert await runner.run_json("after_get_stats", data) is data
    await runner.run("before_vdsm_start")
    assert list(tmp_dir.iterdir()) == []


async def test_missing_hooks_root_is_not_an_error(tmp_path):
    runner = HookRunner(tmp_path / "absent")
    assert await runner.run_xml("before_vm_start", DOMAIN) == DOMAIN
    assert runner.describe() == {}


async def test_scripts_dropped_in_at_run_time_are_picked_up(root, runner):
    assert await runner.run_xml("before_vm_start", DOMAIN) == DOMAIN
    install(root, "before_vm_start", "new", sh("sed -i 's|vm1|vm9|' \"$_hook_domxml\"\n"))
    out = await runner.run_xml("before_vm_start", DOMAIN)
    assert etree.fromstring(out).findtext("name") == "vm9"


# --- developer errors -----------------------------------------------------------------


async def test_unknown_hook_point_is_a_programming_error(runner):
    with pytest.raises(ValueError, match="unknown hook point 'before_vm_explode'"):
        await runner.run_xml("before_vm_explode", DOMAIN)
    with pytest.raises(ValueError, match="unknown hook point"):
        runner.has_scripts("../etc")


async def test_document_kind_must_match_the_hook_point(runner):
    with pytest.raises(ValueError, match="takes json"):
        await runner.run_xml("after_get_caps", DOMAIN)
    with pytest.raises(ValueError, match="takes xml"):
        await runner.run_json("before_vm_start", {})


# --- launch flags -----------------------------------------------------------------------


async def test_before_vm_start_hands_launch_flags_to_scripts_and_back(
    root, run_dir, run_dir_runner
):
    seen = root.parent / "seen"
    install(
        root,
        "before_vm_start",
        "flags",
        py(f"""
        import os
        import hooking
        vm = os.environ['vmId']
        flags = hooking.load_vm_launch_flags_from_file(vm)
        open({str(seen)!r}, 'w').write(str(flags))
        hooking.dump_vm_launch_flags_to_file(vm, flags | 1)
    """),
    )
    xml, flags = await run_dir_runner.before_vm_start(DOMAIN, vm_id="vm-7", flags=4)
    assert seen.read_text() == "4"
    assert flags == 5
    assert xml == DOMAIN
    assert list((run_dir / "launchflags").iterdir()) == []


async def test_before_vm_start_without_scripts_touches_no_file(run_dir, run_dir_runner):
    assert await run_dir_runner.before_vm_start(DOMAIN, vm_id="vm-7", flags=2) == (DOMAIN, 2)
    assert not run_dir.exists()


async def test_before_vm_start_failure_removes_the_flags_file(root, run_dir, run_dir_runner):
    install(root, "before_vm_start", "fail", sh("exit 2\n"))
    with pytest.raises(HookError):
        await run_dir_runner.before_vm_start(DOMAIN, vm_id="vm-7")
    assert list((run_dir / "launchflags").iterdir()) == []


async def test_unusable_temporary_directory_is_a_hook_error(root, tmp_path):
    install(root, "before_vm_start", "ok", sh("exit 0\n"))
    runner = HookRunner(root, tmp_dir=tmp_path / "missing")
    with pytest.raises(HookError, match="cannot create the hooks' document file"):
        await runner.run_xml("before_vm_start", DOMAIN)
