"""hooking: helpers for writing vdsm_py (and oVirt VDSM) hook scripts.

A hook script is an executable file in ``<hooks root>/<hook point>/``. The daemon runs it
with the document of the moment in a temporary file: the domain (or device) XML in the file
named by ``$_hook_domxml``, or a JSON document in the file named by ``$_hook_json``. The
script may rewrite that file; the daemon uses what the chain of scripts leaves there.
Custom properties arrive as environment variables, the VM's id as ``$vmId``.

Exit codes: 0 success; 1 failure, the next scripts still run; 2 failure, no further
script runs; anything else is reserved (logged as a warning). Whatever a script writes to
stderr ends up in the daemon's log, and in the error reported when the script fails.

This module is the same API as VDSM's ``hooking``, so scripts written for VDSM run
unchanged. It imports only the standard library: scripts may run under any Python 3.
See docs/hooks.md for the whole contract and a worked example.
"""

import json
import os
import subprocess
import sys
from xml.dom import minidom

__all__ = [
    "dump_vm_launch_flags_to_file",
    "execCmd",
    "exit_hook",
    "load_vm_launch_flags_from_file",
    "log",
    "read_domxml",
    "read_json",
    "tobool",
    "write_domxml",
    "write_json",
]

# Where the daemon keeps launch flags: <run dir>/launchflags/<vmId> (must match
# vdsm_py/hooks/launchflags.py). The daemon tells scripts its run dir in this variable.
_RUN_DIR_ENV = "_hook_run_dir"
_DEFAULT_RUN_DIR = "/run/vdsm_py"
_LAUNCH_FLAGS_SUBDIR = "launchflags"


# --- the document ---------------------------------------------------------------------


def read_domxml():
    """The domain (or device) XML handed to this hook, as an ``xml.dom.minidom`` Document."""
    with open(os.environ["_hook_domxml"], "rb") as f:
        return minidom.parse(f)


def write_domxml(domxml):
    """Replace the XML handed on to the next script and to the daemon by ``domxml``."""
    data = domxml.toxml(encoding="utf-8")
    with open(os.environ["_hook_domxml"], "wb") as f:
        f.write(data)


def read_json():
    """The JSON document handed to this hook (capabilities, statistics, network setup...)."""
    with open(os.environ["_hook_json"], encoding="utf-8") as f:
        return json.load(f)


def write_json(data):
    """Replace the JSON document handed on to the next script and to the daemon."""
    text = json.dumps(data)
    with open(os.environ["_hook_json"], "w", encoding="utf-8") as f:
        f.write(text)


# --- talking to the daemon ------------------------------------------------------------


def log(message):
    """Write ``message`` to stderr, which the daemon copies into its log."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def exit_hook(message, return_code=2):
    """Write ``message`` to stderr and exit with ``return_code`` (2: stop the chain)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(return_code)


# --- small utilities ------------------------------------------------------------------


def tobool(value):
    """Interpret a custom property as a boolean, as VDSM does.

    True for ``True``, ``"true"`` (any case) and non-zero integers or integer strings;
    False for everything else, including None and unparsable text.
    """
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "true":
            return True
        try:
            return int(text) != 0
        except ValueError:
            return False
    try:
        return int(value) != 0
    except (TypeError, ValueError):
        return False


def execCmd(  # VDSM's names, kept for compatibility
    command,
    sudo=False,
    cwd=None,
    data=None,
    raw=False,
    printable=None,
    env=None,
    nice=None,
    ioclass=None,
    ioclassdata=None,
    setsid=False,
    execCmdLogger=None,
    resetCpuAffinity=True,
):
    """Run ``command`` (a list of arguments, never a shell string); (rc, out, err).

    As VDSM's: ``data`` (bytes) is fed to stdin; with ``raw`` false, ``out`` and ``err``
    are lists of lines (bytes), otherwise bytes. ``nice``, ``ioclass``/``ioclassdata``,
    ``setsid`` and ``sudo`` wrap the command with ``nice``, ``ionice``, ``setsid`` and
    ``sudo -n``. ``printable`` and ``execCmdLogger`` choose what is logged (to stderr by
    default: a hook's stderr goes to the daemon's log). ``resetCpuAffinity`` is accepted
    for compatibility; the daemon does not pin itself, so there is nothing to reset.
    """
    if isinstance(command, (str, bytes)):
        raise TypeError("execCmd needs a list of arguments, not a string: no shell is used")
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in command]
    if not argv:
        raise ValueError("execCmd needs at least the program to run")
    if ioclass is not None:
        prefix = ["ionice", "-c", str(ioclass)]
        if ioclassdata is not None:
            prefix += ["-n", str(ioclassdata)]
        argv = prefix + argv
    if nice is not None:
        argv = ["nice", "-n", str(nice)] + argv
    if setsid:
        argv = ["setsid"] + argv
    if sudo:
        argv = ["sudo", "-n"] + argv
    if execCmdLogger is not None:
        execCmdLogger.debug("executing: %s", printable or argv)
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    try:
        out, err = proc.communicate(data)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if execCmdLogger is not None:
        execCmdLogger.debug("rc=%s err=%r", proc.returncode, err)
    if not raw:
        out = out.splitlines(False)
        err = err.splitlines(False)
    return proc.returncode, out, err


# --- launch flags (before_vm_start) ---------------------------------------------------


def _launch_flags_file(vm_id):
    vm_id = str(vm_id)
    if not vm_id or "/" in vm_id or vm_id in (".", "..") or "\0" in vm_id:
        raise ValueError(f"invalid VM id: {vm_id!r}")
    run_dir = os.environ.get(_RUN_DIR_ENV) or _DEFAULT_RUN_DIR
    return os.path.join(run_dir, _LAUNCH_FLAGS_SUBDIR, vm_id)


def load_vm_launch_flags_from_file(vm_id):
    """The libvirt flags the VM will be created with (0, VIR_DOMAIN_NONE, if none)."""
    path = _launch_flags_file(vm_id)
    try:
        with open(path, encoding="ascii") as f:
            return int(f.readline())
    except FileNotFoundError:
        return 0


def dump_vm_launch_flags_to_file(vm_id, flags):
    """Set the libvirt flags the VM will be created with (e.g. VIR_DOMAIN_START_PAUSED)."""
    path = _launch_flags_file(vm_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(int(flags)))
    os.replace(tmp, path)
