"""Which files count as hook scripts, and describe() for Host.getCapabilities."""

from __future__ import annotations

import hashlib
import logging
import os
import textwrap
from pathlib import Path

import pytest

from vdsm_py.hooks import POINT_NAMES, POINTS, HookRunner, Payload, get_point
from vdsm_py.hooks.scripts import ScriptFinder

SCRIPT = "#!/bin/sh\nexit 0\n"


def install(root: Path, point: str, name: str, body: str = SCRIPT, mode: int = 0o755) -> Path:
    directory = root / point
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body))
    path.chmod(mode)
    return path


def names(root: Path, point: str) -> list[str]:
    return [s.name for s in ScriptFinder(root).scripts(point)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "hooks"
    path.mkdir()
    return path


def test_executable_files_are_listed_in_lexical_order(root):
    for name in ("b", "10_x", "2_y", "A"):
        install(root, "before_vm_start", name)
    assert names(root, "before_vm_start") == ["10_x", "2_y", "A", "b"]


def test_non_executable_files_are_skipped_with_one_warning(root, caplog):
    install(root, "before_vm_start", "50_ok")
    install(root, "before_vm_start", "README", "text\n", mode=0o644)
    finder = ScriptFinder(root)
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert [s.name for s in finder.scripts("before_vm_start")] == ["50_ok"]
        assert [s.name for s in finder.scripts("before_vm_start")] == ["50_ok"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "README" in warnings[0] and "not executable" in warnings[0]


def test_dot_files_are_ignored(root):
    install(root, "before_vm_start", ".50_ok.swp")
    install(root, "before_vm_start", "50_ok")
    assert names(root, "before_vm_start") == ["50_ok"]


def test_directories_are_not_scripts(root, caplog):
    (root / "before_vm_start" / "subdir").mkdir(parents=True)
    (root / "before_vm_start" / "subdir").chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert names(root, "before_vm_start") == []
    assert "not a regular file" in caplog.text


def test_symlink_to_a_script_inside_the_root_is_followed(root):
    target = install(root, "before_device_create", "50_extnet")
    (root / "before_nic_hotplug").mkdir()
    os.symlink("../before_device_create/50_extnet", root / "before_nic_hotplug" / "50_extnet")
    scripts = ScriptFinder(root).scripts("before_nic_hotplug")
    assert [s.name for s in scripts] == ["50_extnet"]
    assert scripts[0].path == str(target.resolve())


def test_symlink_leading_outside_the_root_is_skipped(root, tmp_path, caplog):
    outside = tmp_path / "elsewhere"
    outside.write_text(SCRIPT)
    outside.chmod(0o755)
    (root / "before_vm_start").mkdir()
    os.symlink(outside, root / "before_vm_start" / "50_out")
    os.symlink("/bin/true", root / "before_vm_start" / "60_true")
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert names(root, "before_vm_start") == []
    assert caplog.text.count("leads outside") == 2


def test_dangling_symlink_is_skipped(root, caplog):
    (root / "before_vm_start").mkdir()
    os.symlink("missing", root / "before_vm_start" / "50_gone")
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert names(root, "before_vm_start") == []
    assert "50_gone" in caplog.text


def test_world_writable_script_is_refused(root, caplog):
    install(root, "before_vm_start", "50_open", mode=0o777)
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert names(root, "before_vm_start") == []
    assert "writable by any user" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_script_owned_by_another_user_is_refused(root, caplog):
    path = install(root, "before_vm_start", "50_theirs")
    os.chown(path, 65534, 65534)
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert names(root, "before_vm_start") == []
    assert "owned by uid 65534" in caplog.text


def test_describe_reports_sha256_of_each_installed_script(root):
    a = install(root, "before_vm_start", "50_a", "#!/bin/sh\necho a\n")
    b = install(root, "after_get_caps", "10_b", "#!/bin/sh\necho b\n")
    install(root, "after_get_caps", "notes", "x", mode=0o644)
    (root / "after_vm_start").mkdir()
    described = HookRunner(root).describe()
    assert described == {
        "before_vm_start": {"50_a": {"checksum": hashlib.sha256(a.read_bytes()).hexdigest()}},
        "after_get_caps": {"10_b": {"checksum": hashlib.sha256(b.read_bytes()).hexdigest()}},
    }


def test_describe_sees_a_changed_script(root):
    path = install(root, "before_vm_start", "50_a", "#!/bin/sh\necho a\n")
    runner = HookRunner(root)
    first = runner.describe()["before_vm_start"]["50_a"]["checksum"]
    path.write_text("#!/bin/sh\necho changed, longer\n")
    second = runner.describe()["before_vm_start"]["50_a"]["checksum"]
    assert first != second == hashlib.sha256(path.read_bytes()).hexdigest()


def test_describe_leaves_out_directories_that_are_not_hook_points(root, caplog):
    install(root, "before_vm_strat", "50_typo")
    with caplog.at_level(logging.WARNING, logger="vdsm_py.hooks"):
        assert HookRunner(root).describe() == {}
    assert "before_vm_strat is not a hook point" in caplog.text


def test_hook_point_table_has_vdsms_names_and_kinds():
    for name in (
        "before_vdsm_start",
        "after_vdsm_stop",
        "before_vm_start",
        "after_vm_start",
        "before_vm_cont",
        "after_vm_cont",
        "before_vm_pause",
        "after_vm_pause",
        "before_vm_destroy",
        "after_vm_destroy",
        "before_vm_set_ticket",
        "after_vm_set_ticket",
        "before_device_create",
        "after_device_create",
        "before_nic_hotplug",
        "after_nic_hotplug",
        "after_nic_hotplug_fail",
        "before_nic_hotunplug",
        "after_nic_hotunplug",
        "after_nic_hotunplug_fail",
        "before_disk_hotplug",
        "after_disk_hotplug",
        "before_disk_hotunplug",
        "after_disk_hotunplug",
        "before_update_device",
        "after_update_device",
        "after_update_device_fail",
        "before_vm_migrate_source",
        "after_vm_migrate_destination",
        "before_vm_hibernate",
        "after_vm_dehibernate",
    ):
        assert get_point(name).payload is Payload.XML, name
    for name in (
        "before_get_caps",
        "after_get_caps",
        "after_get_stats",
        "after_get_vm_stats",
        "after_get_all_vm_stats",
        "before_network_setup",
        "after_network_setup",
        "after_network_setup_fail",
        "after_disk_prepare",
    ):
        assert get_point(name).payload is Payload.JSON, name
    assert POINT_NAMES == frozenset(POINTS)
    assert all("/" not in n and ".." not in n for n in POINT_NAMES)
    assert get_point("after_disk_prepare").fails_operation
    assert not get_point("before_vdsm_start").fails_operation
