"""The ``hooking`` module that hook scripts import (hooks/hooking.py)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
from types import ModuleType

import pytest

from vdsm_py.hooks import HOOKING_PATH, launchflags


@pytest.fixture(scope="module")
def hooking() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hooking", HOOKING_PATH / "hooking.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_hook_code(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a hook script would run: the system's python3, hooking on the path."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(HOOKING_PATH)}
    return subprocess.run(
        ["/usr/bin/python3", "-c", code],
        check=False,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_domxml_round_trip(hooking, tmp_path, monkeypatch):
    path = tmp_path / "dom.xml"
    path.write_text(
        "<?xml version='1.0' encoding='utf-8'?><domain><name>vé</name></domain>", encoding="utf-8"
    )
    monkeypatch.setenv("_hook_domxml", str(path))
    doc = hooking.read_domxml()
    assert doc.documentElement.tagName == "domain"
    doc.getElementsByTagName("name")[0].firstChild.data = "vm-ü"
    hooking.write_domxml(doc)
    assert "<name>vm-ü</name>" in path.read_text(encoding="utf-8")


def test_json_round_trip(hooking, tmp_path, monkeypatch):
    path = tmp_path / "doc.json"
    path.write_text('{"a": [1, 2], "b": null}')
    monkeypatch.setenv("_hook_json", str(path))
    data = hooking.read_json()
    data["c"] = "d"
    hooking.write_json(data)
    assert hooking.read_json() == {"a": [1, 2], "b": None, "c": "d"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (True, True),
        (False, False),
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("2", True),
        ("yes", False),
        ("", False),
        (1, True),
        (0, False),
        ([], False),
    ],
)
def test_tobool_matches_vdsm(hooking, value, expected):
    assert hooking.tobool(value) is expected


def test_execcmd_returns_code_and_output_lines(hooking):
    rc, out, err = hooking.execCmd(["sh", "-c", "echo one; echo two; echo oops >&2; exit 3"])
    assert (rc, out, err) == (3, [b"one", b"two"], [b"oops"])


def test_execcmd_raw_with_stdin_data(hooking):
    rc, out, err = hooking.execCmd(["cat"], data=b"a\nb\n", raw=True)
    assert (rc, out, err) == (0, b"a\nb\n", b"")


def test_execcmd_wraps_with_nice_and_setsid(hooking):
    rc, out, _ = hooking.execCmd(
        ["sh", "-c", "nice; ps -o sid= -p $$; echo $$"], nice=5, setsid=True
    )
    assert rc == 0
    niceness, sid, pid = (line.strip() for line in out)
    assert niceness == b"5"
    assert sid == pid, "setsid makes the command the leader of a new session"


def test_execcmd_logs_to_the_given_logger(hooking, caplog):
    logger = logging.getLogger("test.hooking")
    with caplog.at_level(logging.DEBUG, logger="test.hooking"):
        hooking.execCmd(["true"], execCmdLogger=logger, printable=["true", "(secret hidden)"])
    assert "(secret hidden)" in caplog.text


def test_execcmd_refuses_a_shell_string(hooking):
    with pytest.raises(TypeError, match="list of arguments"):
        hooking.execCmd("echo hi; rm -rf /")


def test_log_and_exit_hook_write_to_stderr(tmp_path):
    result = run_hook_code("import hooking; hooking.log('note'); hooking.exit_hook('bad')", {})
    assert result.returncode == 2
    assert result.stderr == "note\nbad\n"
    result = run_hook_code("import hooking; hooking.exit_hook('soft', return_code=1)", {})
    assert (result.returncode, result.stderr) == (1, "soft\n")


def test_launch_flags_agree_with_the_daemon(hooking, tmp_path, monkeypatch):
    monkeypatch.setenv("_hook_run_dir", str(tmp_path))
    launchflags.dump(tmp_path, "vm-1", 4)
    assert hooking.load_vm_launch_flags_from_file("vm-1") == 4
    hooking.dump_vm_launch_flags_to_file("vm-1", 5)
    assert launchflags.load(tmp_path, "vm-1") == 5
    launchflags.remove(tmp_path, "vm-1")
    assert hooking.load_vm_launch_flags_from_file("vm-1") == 0
    assert launchflags.load(tmp_path, "vm-1", default=7) == 7


def test_launch_flags_refuse_path_like_vm_ids(hooking, tmp_path, monkeypatch):
    monkeypatch.setenv("_hook_run_dir", str(tmp_path))
    for bad in ("../x", "..", "a/b", ""):
        with pytest.raises(ValueError):
            hooking.dump_vm_launch_flags_to_file(bad, 1)
        with pytest.raises(ValueError):
            launchflags.dump(tmp_path, bad, 1)


def test_unparsable_launch_flags_are_reported_with_the_file(tmp_path):
    (tmp_path / "launchflags").mkdir()
    (tmp_path / "launchflags" / "vm-1").write_text("paused\n")
    with pytest.raises(ValueError, match="launchflags/vm-1 holds 'paused'"):
        launchflags.load(tmp_path, "vm-1")


def test_hooking_imports_only_the_standard_library():
    code = "import sys, hooking; print(sorted(m for m in sys.modules if m.startswith('vdsm')))"
    result = run_hook_code(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
