"""A real fence agent for tests: powers a dev host "off" by killing its daemon by PID.

Speaks the fence-agents convention engine-lite uses: ``key=value`` lines on standard input
(``action=off`` is the only action it knows), exit status 0 once the host is off, else
non-zero with the reason on standard output. The PID comes from the file given with
``--pid-file`` (a dev host's ``run/vdsmd.lock``); a missing file is a failed fence, as an
unreachable power switch would be.

    python fence_kill.py --pid-file DIR/run/vdsmd.lock
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

GONE_WITHIN = 10.0  # seconds for the killed process to disappear


def options(text: str) -> dict[str, str]:
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, _, value in pairs}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is off too: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args()
    opts = options(sys.stdin.read())
    if opts.get("action") != "off":
        print(f"unsupported action {opts.get('action')!r}")
        return 2
    try:
        pid = int(args.pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        print(f"cannot read the host's PID from {args.pid_file}: {exc}")
        return 1
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        print(f"host {opts.get('host')}: process {pid} already gone")
        return 0
    deadline = time.monotonic() + GONE_WITHIN
    while not gone(pid):
        if time.monotonic() > deadline:
            print(f"process {pid} still there {GONE_WITHIN:g} s after SIGKILL")
            return 1
        time.sleep(0.05)
    print(f"host {opts.get('host')}: killed process {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
