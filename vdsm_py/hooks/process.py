"""Running one hook script: a child process with a deadline, on the event loop.

Owns how a script is started and ended:

- started with ``asyncio.create_subprocess_exec`` (an argv of one path, never a shell), in a
  new session so that the script and everything it starts share one process group;
- stdin is ``/dev/null``; stdout and stderr go to anonymous temporary files (``O_TMPFILE``,
  gone when closed) rather than pipes, so a background process that a script leaves behind
  holding its output open can never make the daemon wait, and nothing is left on disk;
- past the deadline, or when the caller is cancelled, the whole process group is killed with
  SIGKILL (grandchildren included; a process that started a session of its own has left the
  group and is out of reach, as with any process-group kill);
- no worker thread of the daemon's executor is used.

Exit status semantics (what an exit code *means* for the chain) belong to the runner; this
module reports facts only. Must not touch the hook's data file.
"""

from __future__ import annotations

import asyncio
import enum
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO

# How much of a script's output is kept for logs and error messages.
OUTPUT_LIMIT = 64 * 1024


class Outcome(enum.Enum):
    EXITED = "exited"  # ran to completion; see returncode
    TIMED_OUT = "timed out"  # killed with its process group past the deadline
    NOT_STARTED = "not started"  # exec failed (bad interpreter line, permissions...)


@dataclass(frozen=True, slots=True)
class ProcessResult:
    outcome: Outcome
    returncode: int | None
    """Exit code; negative N when killed by signal N; None when not started."""
    stdout: str
    stderr: str
    duration: float
    pid: int | None = None


async def run_script(path: str, env: dict[str, str], timeout: float) -> ProcessResult:
    """Run ``path`` with ``env`` and wait at most ``timeout`` seconds for it to exit."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return ProcessResult(
                Outcome.NOT_STARTED,
                None,
                "",
                f"cannot execute {path}: {reason}",
                time.monotonic() - start,
            )
        outcome = Outcome.EXITED
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            outcome = Outcome.TIMED_OUT
            kill_group(proc.pid)
            await proc.wait()
        except BaseException:
            # Cancelled (the caller gave up, the daemon stops): leave nothing running. The
            # event loop's child watcher reaps the killed process on its own.
            kill_group(proc.pid)
            raise
        duration = time.monotonic() - start
        return ProcessResult(outcome, proc.returncode, _read(out), _read(err), duration, proc.pid)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group ``pgid`` (no error if it is gone already)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    data = f.read(OUTPUT_LIMIT + 1)
    text = data[:OUTPUT_LIMIT].decode("utf-8", errors="replace")
    if len(data) > OUTPUT_LIMIT:
        text += "\n[output truncated]"
    return text
