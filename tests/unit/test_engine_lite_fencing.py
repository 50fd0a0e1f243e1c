"""engine-lite's fence agent runner and argv checks, with real programs (this Python)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "contrib" / "engine-lite"))

from engine_lite.errors import InvalidInput
from engine_lite.fencing import check_agent, run_agent
from engine_lite.models import Host

HOST = Host("id1", "h1", "c", "192.0.2.7", 54321)
ECHO_OPTIONS = "import sys; print(sys.stdin.read().replace(chr(10), ';'))"


@pytest.mark.parametrize("argv", ["/bin/agent --off", [""], ["agent", "--off"], [1], None])
def test_fence_agent_must_be_an_argv_list_with_an_absolute_program(argv: object) -> None:
    with pytest.raises(InvalidInput):
        check_agent(argv)


def test_empty_argv_clears_the_agent() -> None:
    assert check_agent([]) == []
    assert check_agent(["/usr/sbin/fence_ipmilan", "--ip", "x; rm -rf /"]) == \
        ["/usr/sbin/fence_ipmilan", "--ip", "x; rm -rf /"]


async def test_agent_gets_its_options_on_stdin_and_success_is_exit_zero() -> None:
    ok, said = await run_agent([sys.executable, "-c", ECHO_OPTIONS], HOST, 30)
    assert ok
    assert said == "action=off;host=h1;address=192.0.2.7;port=54321;"


async def test_agent_failure_reports_its_status_and_output() -> None:
    ok, said = await run_agent(
        [sys.executable, "-c", "print('switch unreachable'); raise SystemExit(3)"], HOST, 30)
    assert not ok
    assert "exited with 3: switch unreachable" in said


async def test_agent_running_too_long_is_killed_and_failed() -> None:
    ok, said = await run_agent([sys.executable, "-c", "import time; time.sleep(60)"], HOST,
                               0.5)
    assert not ok
    assert "did not finish within 0.5 s" in said


async def test_missing_agent_program_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    ok, said = await run_agent([str(tmp_path / "nope")], HOST, 5)
    assert not ok
    assert "cannot run" in said
