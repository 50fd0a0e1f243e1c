"""Hook scripts run through the real daemon: ``vdsmd --dev`` on libvirt's test driver,
called over TLS/STOMP/JSON-RPC with the client library.

Real shell and Python scripts are dropped into ``ROOT/hooks/<point>/`` while the daemon
runs (it re-reads the directories on every call). What the scripts did is read back
through the API (``Host.dumpxmls`` shows what libvirt runs), from files the scripts write,
and from the daemon's temporary and run directories (nothing left behind).

One daemon serves the module, configured with a long ``[virt] create_error_wait`` so that a
failing ``before_vm_start`` is answered by ``VM.create`` itself (error 1500). The documented
other path -- a hook that fails after that wait makes the VM Down with the hook's error --
has its own daemon with the default wait.
"""

from __future__ import annotations

import asyncio
import configparser
import hashlib
import json
import shutil
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.integration.daemon_proc import DaemonProcess, start_daemon
from tests.integration.virt_support import plain_vm
from vdsm_py.client import Client, RpcError
from vdsm_py.devhost import CONF_NAME, dev_settings
from vdsm_py.hooks import HOOKING_PATH

EXAMPLES = HOOKING_PATH / "examples"
HOOK_ERROR = 1500
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

# A Python hook appending "<its name>:<custom property chain_tag>" to the domain's
# <description> (created if missing), the way VDSM hook authors write them.
APPEND_DESCRIPTION = """#!/usr/bin/python3
import os
import hooking

doc = hooking.read_domxml()
domain = doc.documentElement
found = domain.getElementsByTagName("description")
if found:
    desc = found[0]
else:
    desc = doc.createElement("description")
    desc.appendChild(doc.createTextNode(""))
    domain.appendChild(desc)
text = desc.firstChild.data if desc.firstChild else ""
item = os.path.basename(__file__) + ":" + os.environ.get("chain_tag", "-")
value = item if not text else text + ";" + item
while desc.firstChild:
    desc.removeChild(desc.firstChild)
desc.appendChild(doc.createTextNode(value))
hooking.write_domxml(doc)
"""

# A shell hook doing the same, for a domain without a <description> yet.
SHELL_DESCRIPTION = """#!/bin/sh
set -e
sed -i "s|</domain>|<description>$(basename "$0"):${chain_tag}</description></domain>|" \
    "$_hook_domxml"
"""

# Writes what it saw (point, vmId, a custom property, the domain's name) to $record_dir.
RECORD = """#!/usr/bin/python3
import json, os, sys
import hooking

doc = hooking.read_domxml()
names = doc.documentElement.getElementsByTagName("name")
seen = {
    "script": os.path.basename(__file__),
    "point": os.path.basename(os.path.dirname(os.path.abspath(__file__))),
    "vmId": os.environ.get("vmId"),
    "flavour": os.environ.get("flavour"),
    "name": names[0].firstChild.data if names else None,
}
path = os.path.join(os.environ["record_dir"], seen["point"] + "." + seen["script"])
with open(path, "a") as f:
    f.write(json.dumps(seen) + "\\n")
sys.exit(int(os.environ.get("record_exit", "0")))
"""

# Copies the <qemu:arg> values of the domain into <description> (the test driver does not
# keep libvirt's QEMU namespace, but keeps the description).
QEMU_ARGS_TO_DESCRIPTION = """#!/usr/bin/python3
import json
import hooking

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
doc = hooking.read_domxml()
args = [a.getAttribute("value") for a in doc.getElementsByTagNameNS(QEMU_NS, "arg")]
desc = doc.createElement("description")
desc.appendChild(doc.createTextNode(json.dumps(args)))
doc.documentElement.appendChild(desc)
hooking.write_domxml(doc)
"""


# -- the daemon ------------------------------------------------------------------------------


def start_host(root: Path, virt: dict[str, str], hook_timeout: float = 30) -> DaemonProcess:
    """A dev host whose config file is written first, with ``virt`` overrides."""
    root.mkdir(parents=True)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(dev_settings(root.resolve()))
    parser.set("virt", "powering_up_timeout", "0.2")  # test-driver guests have no agent
    for key, value in virt.items():
        parser.set("virt", key, value)
    parser.set("hooks", "timeout", str(hook_timeout))
    with open(root / CONF_NAME, "w", encoding="utf-8") as f:
        parser.write(f)
    tmp = root / "tmp"
    tmp.mkdir()
    return start_daemon(root, env={"TMPDIR": str(tmp)})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = start_host(tmp_path_factory.mktemp("hooks-daemon") / "host",
                      {"create_error_wait": "30"})
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def hooks(daemon: DaemonProcess) -> Iterator[Hooks]:
    h = Hooks(daemon.root / "hooks")
    try:
        yield h
    finally:
        h.clear()


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


@pytest.fixture
async def api(daemon: DaemonProcess) -> AsyncIterator[Api]:
    client = await Client.connect("127.0.0.1", daemon.port,
                                  ssl_context=daemon.client_ssl_context())
    a = Api(client)
    try:
        yield a
    finally:
        await a.cleanup()
        await client.close()


class Hooks:
    """The daemon's hook directories, as an admin sees them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def install(self, point: str, name: str, text: str, mode: int = 0o755) -> Path:
        path = self.root / point / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def install_example(self, point: str, name: str, example: str) -> Path:
        path = self.root / point / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(EXAMPLES / example / f"{example}.py", path)
        path.chmod(0o755)
        return path

    def clear(self) -> None:
        for point in self.root.iterdir():
            shutil.rmtree(point)


class Api:
    """The client, plus the VMs a test created (destroyed at the end, whatever happened)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.created: list[str] = []

    async def call(self, method: str, **params: Any) -> Any:
        return await self.client.call(method, params)

    async def create(self, vm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        self.created.append(vm_id)
        return await self.call("VM.create", vmID=vm_id, vmParams=params)

    async def status(self, vm_id: str) -> dict[str, Any]:
        (stats,) = await self.call("VM.getStats", vmID=vm_id)
        return stats

    async def wait_status(self, vm_id: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout  # a liveness bound, not a timing assertion
        while True:
            stats = await self.status(vm_id)
            if stats["status"] == wanted:
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"{vm_id} still {stats['status']}, not {wanted}: {stats}")
            await asyncio.sleep(0.05)

    async def domain(self, vm_id: str) -> etree._Element:
        """The domain as libvirt runs it."""
        xmls = await self.call("Host.dumpxmls", vmList=[vm_id])
        return etree.fromstring(xmls[vm_id].encode())

    async def listed(self, vm_id: str) -> bool:
        return bool(await self.call("Host.getVMList", vmList=[vm_id]))

    async def cleanup(self) -> None:
        for vm_id in self.created:
            try:
                await self.call("VM.destroy", vmID=vm_id)
            except RpcError as exc:
                if exc.code != 1:  # noVM: the test destroyed it, or it never was
                    raise


def read_records(records: Path, point: str, script: str) -> list[dict[str, Any]]:
    path = records / f"{point}.{script}"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def leftovers(daemon: DaemonProcess, vm_id: str) -> list[str]:
    """Hook documents in the daemon's temp dir and launch-flags files of ``vm_id``."""
    found = [p.name for p in (daemon.root / "tmp").glob("vdsm_py-*")]
    flags = daemon.root / "run" / "launchflags"
    if flags.is_dir():
        found += [p.name for p in flags.iterdir() if vm_id in p.name]
    return found


async def assert_nothing_left(api: Api, daemon: DaemonProcess, vm_id: str,
                              params: dict[str, Any], hooks: Hooks) -> None:
    """The failed start left no VM, no domain, no file: the same VM starts cleanly now."""
    assert not await api.listed(vm_id)
    assert leftovers(daemon, vm_id) == []
    hooks.clear()
    # a domain left in libvirt with this UUID or name would make this create fail (9)
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")


# -- XML rewritten and used ------------------------------------------------------------------


async def test_python_before_vm_start_hook_rewrites_the_domain_libvirt_runs(
    api: Api, hooks: Hooks, daemon: DaemonProcess
):
    hooks.install("before_vm_start", "50_describe", APPEND_DESCRIPTION)
    vm_id, params = plain_vm("described", custom={"chain_tag": "from-custom"})
    answer = await api.create(vm_id, params)
    assert answer["status"] == "WaitForLaunch"
    await api.wait_status(vm_id, "Up")
    domain = await api.domain(vm_id)
    assert domain.findtext("description") == "50_describe:from-custom"
    assert domain.findtext("uuid") == vm_id
    assert leftovers(daemon, vm_id) == []


async def test_scripts_chain_in_lexical_order_shell_and_python_alike(api: Api, hooks: Hooks):
    # lexical, not numeric: 10_shell, 20_python, 9_python
    hooks.install("before_vm_start", "9_python", APPEND_DESCRIPTION)
    hooks.install("before_vm_start", "20_python", APPEND_DESCRIPTION)
    hooks.install("before_vm_start", "10_shell", SHELL_DESCRIPTION)
    # neither a dot file nor a non-executable file runs
    hooks.install("before_vm_start", ".05_hidden", "#!/bin/sh\nexit 2\n")
    hooks.install("before_vm_start", "15_not_executable", "#!/bin/sh\nexit 2\n", mode=0o644)
    vm_id, params = plain_vm("chain", custom={"chain_tag": "t"})
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")
    domain = await api.domain(vm_id)
    assert domain.findtext("description") == "10_shell:t;20_python:t;9_python:t"


async def test_extnet_example_moves_the_first_nic_onto_the_named_libvirt_network(
    api: Api, hooks: Hooks
):
    hooks.install_example("before_vm_start", "50_extnet", "extnet")
    vm_id, params = plain_vm("extnet", custom={"extnet": "default"})
    first_mac, second_mac = (d["macAddr"] for d in params["devices"][:2])
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")
    domain = await api.domain(vm_id)
    nics = {nic.find("mac").get("address"): nic for nic in domain.iterfind("devices/interface")}
    moved = nics[first_mac]
    assert moved.get("type") == "network"
    assert moved.find("source").attrib == {"network": "default"}
    assert nics[second_mac].find("source").get("network") == "default"  # already there
    assert len(nics) == 2


async def test_extnet_example_refuses_a_bad_network_name_with_its_message(
    api: Api, hooks: Hooks, daemon: DaemonProcess
):
    hooks.install_example("before_vm_start", "50_extnet", "extnet")
    vm_id, params = plain_vm("extnet-slash", custom={"extnet": "a/b"})
    with pytest.raises(RpcError) as err:
        await api.create(vm_id, params)
    assert err.value.code == HOOK_ERROR
    assert "50_extnet" in err.value.message
    assert "is not a libvirt network name" in err.value.message
    await assert_nothing_left(api, daemon, vm_id, params, hooks)


async def test_qemu_cmdline_example_puts_its_arguments_in_the_domain_handed_to_libvirt(
    api: Api, hooks: Hooks
):
    hooks.install_example("before_vm_start", "50_qemu_cmdline", "qemu_cmdline")
    hooks.install("before_vm_start", "90_qemu_args_to_description", QEMU_ARGS_TO_DESCRIPTION)
    wanted = ["-smbios", "type=1,serial=hooked <&'\">"]
    vm_id, params = plain_vm("cmdline", custom={"qemu_cmdline": json.dumps(wanted)})
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")
    domain = await api.domain(vm_id)
    assert json.loads(domain.findtext("description")) == wanted


# -- environment ---------------------------------------------------------------------------


async def test_custom_properties_and_vm_id_reach_the_scripts_of_each_point(
    api: Api, hooks: Hooks, records: Path
):
    for point in ("before_vm_start", "after_vm_start", "before_vm_pause", "after_vm_pause",
                  "before_vm_cont", "after_vm_cont", "before_vm_destroy", "after_vm_destroy"):
        hooks.install(point, "50_record", RECORD)
    vm_id, params = plain_vm("env", custom={"flavour": "mint tea", "record_dir": str(records)})
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")
    assert await api.call("VM.pause", vmID=vm_id) == {"vmList": {}}
    assert (await api.status(vm_id))["status"] == "Paused"
    assert await api.call("VM.cont", vmID=vm_id) == {"vmList": {}}
    assert await api.call("VM.destroy", vmID=vm_id) is True
    for point in ("before_vm_start", "after_vm_start", "before_vm_pause", "after_vm_pause",
                  "before_vm_cont", "after_vm_cont", "before_vm_destroy", "after_vm_destroy"):
        assert read_records(records, point, "50_record") == [{
            "script": "50_record", "point": point, "vmId": vm_id, "flavour": "mint tea",
            "name": params["vmName"],
        }], point


# -- exit codes and failures -----------------------------------------------------------------


async def test_exit_2_fails_the_create_with_1500_stops_the_chain_and_leaves_nothing(
    api: Api, hooks: Hooks, daemon: DaemonProcess, records: Path
):
    hooks.install("before_vm_start", "10_refuse",
                  "#!/bin/sh\necho 'no VMs on Sundays' >&2\nexit 2\n")
    hooks.install("before_vm_start", "20_record", RECORD)
    vm_id, params = plain_vm("refused", custom={"record_dir": str(records)})
    with pytest.raises(RpcError) as err:
        await api.create(vm_id, params)
    assert err.value.code == HOOK_ERROR
    assert "10_refuse" in err.value.message
    assert "no VMs on Sundays" in err.value.message
    assert read_records(records, "before_vm_start", "20_record") == []  # chain stopped
    await assert_nothing_left(api, daemon, vm_id, params, hooks)


async def test_exit_1_lets_the_chain_go_on_but_fails_the_create(
    api: Api, hooks: Hooks, daemon: DaemonProcess, records: Path
):
    hooks.install("before_vm_start", "10_complain",
                  "#!/bin/sh\necho 'soft failure' >&2\nexit 1\n")
    hooks.install("before_vm_start", "20_record", RECORD)
    vm_id, params = plain_vm("exit1", custom={"record_dir": str(records)})
    with pytest.raises(RpcError) as err:
        await api.create(vm_id, params)
    assert err.value.code == HOOK_ERROR
    assert "soft failure" in err.value.message
    assert len(read_records(records, "before_vm_start", "20_record")) == 1  # chain went on
    await assert_nothing_left(api, daemon, vm_id, params, hooks)


async def test_other_exit_codes_are_only_warnings_and_the_rewrite_stands(
    api: Api, hooks: Hooks
):
    hooks.install("before_vm_start", "10_describe", APPEND_DESCRIPTION)
    hooks.install("before_vm_start", "20_odd", "#!/bin/sh\necho odd >&2\nexit 3\n")
    vm_id, params = plain_vm("exit3", custom={"chain_tag": "kept"})
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")
    assert (await api.domain(vm_id)).findtext("description") == "10_describe:kept"


async def test_a_script_writing_invalid_xml_fails_the_create_clearly_and_leaves_nothing(
    api: Api, hooks: Hooks, daemon: DaemonProcess
):
    hooks.install("before_vm_start", "50_garbage",
                  "#!/bin/sh\nprintf '<domain><name>half' > \"$_hook_domxml\"\n")
    vm_id, params = plain_vm("garbage")
    with pytest.raises(RpcError) as err:
        await api.create(vm_id, params)
    assert err.value.code == HOOK_ERROR
    assert "50_garbage" in err.value.message
    assert "invalid XML" in err.value.message
    await assert_nothing_left(api, daemon, vm_id, params, hooks)


async def test_failing_after_hooks_never_fail_start_or_destroy(
    api: Api, hooks: Hooks, records: Path
):
    fail = "#!/bin/sh\necho 'after hook broke' >&2\nexit 2\n"
    hooks.install("after_vm_start", "10_fail", fail)
    hooks.install("after_vm_destroy", "10_fail", fail)
    hooks.install("after_vm_destroy", "20_record", RECORD)
    vm_id, params = plain_vm("after", custom={"record_dir": str(records)})
    await api.create(vm_id, params)
    stats = await api.wait_status(vm_id, "Up")
    assert "exitCode" not in stats or stats["exitCode"] == 0
    assert await api.call("VM.destroy", vmID=vm_id) is True
    assert not await api.listed(vm_id)
    # exit 2 stopped the after_vm_destroy chain, and that was all it did
    assert read_records(records, "after_vm_destroy", "20_record") == []


async def test_a_failing_before_vm_pause_hook_fails_the_pause_and_the_vm_runs_on(
    api: Api, hooks: Hooks
):
    vm_id, params = plain_vm("nopause")
    await api.create(vm_id, params)
    await api.wait_status(vm_id, "Up")
    hooks.install("before_vm_pause", "10_refuse", "#!/bin/sh\necho 'stay up' >&2\nexit 2\n")
    with pytest.raises(RpcError) as err:
        await api.call("VM.pause", vmID=vm_id)
    assert err.value.code == HOOK_ERROR
    assert "stay up" in err.value.message
    assert (await api.status(vm_id))["status"] == "Up"
    hooks.clear()
    assert await api.call("VM.pause", vmID=vm_id) == {"vmList": {}}
    assert (await api.status(vm_id))["status"] == "Paused"


# -- capabilities ----------------------------------------------------------------------------


async def test_capabilities_list_installed_scripts_with_their_checksums(
    api: Api, hooks: Hooks
):
    assert (await api.call("Host.getCapabilities"))["hooks"] == {}
    a = hooks.install("before_vm_start", "50_describe", APPEND_DESCRIPTION)
    b = hooks.install_example("before_vm_start", "60_extnet", "extnet")
    c = hooks.install("after_vm_destroy", "10_fail", "#!/bin/sh\nexit 1\n")
    hooks.install("after_vm_destroy", "20_not_executable", "#!/bin/sh\n", mode=0o644)

    def checksum(path: Path) -> dict[str, str]:
        return {"checksum": hashlib.sha256(path.read_bytes()).hexdigest()}

    caps = await api.call("Host.getCapabilities")
    assert caps["hooks"] == {
        "before_vm_start": {"50_describe": checksum(a), "60_extnet": checksum(b)},
        "after_vm_destroy": {"10_fail": checksum(c)},
    }
    # an edited script gets a new checksum on the next call
    a.write_text(APPEND_DESCRIPTION + "# edited\n")
    caps = await api.call("Host.getCapabilities")
    assert caps["hooks"]["before_vm_start"]["50_describe"] == checksum(a)
    assert stat.S_IMODE(a.stat().st_mode) == 0o755


# -- the start failing after create_error_wait: the VM goes Down -----------------------------


@pytest.fixture(scope="module")
def default_wait_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The default [virt] create_error_wait (0.1 s), and a short hook timeout."""
    proc = start_host(tmp_path_factory.mktemp("hooks-late") / "host", {}, hook_timeout=3)
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
async def late_api(default_wait_daemon: DaemonProcess) -> AsyncIterator[tuple[Api, Hooks]]:
    daemon = default_wait_daemon
    client = await Client.connect("127.0.0.1", daemon.port,
                                  ssl_context=daemon.client_ssl_context())
    api, hooks = Api(client), Hooks(daemon.root / "hooks")
    try:
        yield api, hooks
    finally:
        hooks.clear()
        await api.cleanup()
        await client.close()


async def test_a_hook_failing_after_the_create_answer_makes_the_vm_down_with_its_error(
    default_wait_daemon: DaemonProcess, late_api: tuple[Api, Hooks]
):
    daemon, (api, hooks) = default_wait_daemon, late_api
    # slower than [virt] create_error_wait (0.1 s): VM.create has answered by then
    hooks.install("before_vm_start", "10_slow_refusal",
                  "#!/bin/sh\nsleep 0.5\necho 'refused late' >&2\nexit 2\n")
    vm_id, params = plain_vm("late")
    answer = await api.create(vm_id, params)
    assert answer["status"] == "WaitForLaunch"
    down = await api.wait_status(vm_id, "Down")
    assert (down["exitCode"], down["exitReason"]) == (1, 1)  # error, generic (not libvirt's 3)
    assert "10_slow_refusal" in down["exitMessage"]
    assert "refused late" in down["exitMessage"]
    assert leftovers(daemon, vm_id) == []
    assert await api.call("VM.destroy", vmID=vm_id) is True
    await assert_nothing_left(api, daemon, vm_id, params, hooks)


def pid_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def test_a_hook_past_its_timeout_is_killed_with_its_grandchildren_and_the_vm_is_down(
    default_wait_daemon: DaemonProcess, late_api: tuple[Api, Hooks], tmp_path: Path
):
    daemon, (api, hooks) = default_wait_daemon, late_api
    pids = tmp_path / "pids"
    hooks.install("before_vm_start", "10_hang",
                  "#!/bin/sh\n"
                  "sh -c 'sleep 300 & echo $! > \"$pids\"/grandchild; wait' &\n"
                  "echo $$ > \"$pids\"/script\n"
                  "wait\n")
    hooks.install("before_vm_start", "20_never", "#!/bin/sh\ntouch \"$pids\"/20_ran\n")
    pids.mkdir()
    vm_id, params = plain_vm("hang", custom={"pids": str(pids)})
    await api.create(vm_id, params)
    down = await api.wait_status(vm_id, "Down", timeout=60)
    assert down["exitCode"] == 1
    assert "10_hang" in down["exitMessage"]
    assert "timed out" in down["exitMessage"]
    deadline = time.monotonic() + 10  # liveness bound for the kill to land
    survivors = [int((pids / n).read_text()) for n in ("script", "grandchild")]
    while (survivors := [p for p in survivors if pid_running(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert survivors == []
    assert not (pids / "20_ran").exists()  # a timeout stops the chain
    assert leftovers(daemon, vm_id) == []
    assert await api.call("VM.destroy", vmID=vm_id) is True
