"""The engine's local control socket: ``engine-lite serve`` owns the engine, the CLI asks it.

A Unix socket in the state directory (mode 0600: whoever can open it is the admin), one
JSON request per line (``{"op": "vm.start", "args": {...}}``), one JSON answer per line
(``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"kind", "message", ...}}``).
Operations map one to one onto :class:`~engine_lite.engine.Engine` methods; this module
only decodes, dispatches and encodes. Must not hold engine logic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine_lite.engine import Engine
from engine_lite.errors import EngineError, InvalidInput
from engine_lite.hostside import LocalHostAgent

log = logging.getLogger("engine_lite.control")

MAX_REQUEST = 1024 * 1024

Op = Callable[[Engine, dict[str, Any]], Awaitable[Any]]


def _arg(args: dict[str, Any], name: str, kind: type = str, default: Any = ...) -> Any:
    if name not in args or args[name] is None:
        if default is ...:
            raise InvalidInput(f"missing argument {name!r}")
        return default
    value = args[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidInput(f"argument {name!r} must be a {kind.__name__}")
    return value


async def _host_add(engine: Engine, a: dict[str, Any]) -> Any:
    address = _arg(a, "address", default="127.0.0.1")
    port = _arg(a, "port", int, None)
    if a.get("dev_dir"):
        from vdsm_py.devhost import read_port

        dev_dir = Path(_arg(a, "dev_dir"))
        port = port or read_port(dev_dir)
        if port is None:
            raise InvalidInput(f"{dev_dir} is not a vdsmd --dev directory (no vdsm_py.conf)")
        agent = LocalHostAgent.for_dev_host(dev_dir, address, tool=engine.config.vdsm_tool)
    elif a.get("pki_dir"):
        agent = LocalHostAgent.for_pki_dir(
            Path(_arg(a, "pki_dir")), address, apply=_arg(a, "apply", default="manual"),
            command=_arg(a, "command", default=None), tool=engine.config.vdsm_tool)
    else:
        raise InvalidInput("say where the host's PKI is: --dev-dir DIR or --pki-dir DIR")
    if port is None:
        raise InvalidInput("missing --port")
    wait = _arg(a, "wait", bool, agent.spec.get("apply") != "manual")
    host = await engine.add_host(_arg(a, "name"), address, port, agent, wait=wait)
    return host.view()


async def _vm_create(engine: Engine, a: dict[str, Any]) -> Any:
    vm = await engine.vms.create(
        _arg(a, "name"), _arg(a, "memory", int), _arg(a, "vcpus", int, 1),
        nics=_arg(a, "nics", list, []), custom=_arg(a, "custom", dict, {}),
        ha=_arg(a, "ha", bool, False), disks=_arg(a, "disks", list, []))
    return _vm_view(engine, vm.id)


def _vm_view(engine: Engine, ref: str) -> dict[str, Any]:
    vm = engine.ctx.vm(ref)
    host = engine.ctx.hosts.get(vm.host_id or "")
    return vm.view(host.name if host else None)


async def _maintenance(engine: Engine, a: dict[str, Any], on: bool) -> Any:
    running = await engine.set_maintenance(_arg(a, "ref"), on)
    return {**engine.host(_arg(a, "ref")).view(), "running_vms": running}


async def _vm_start(engine: Engine, a: dict[str, Any]) -> Any:
    vm = await engine.vms.start(_arg(a, "ref"))
    return _vm_view(engine, vm.id)


async def _vm_stop(engine: Engine, a: dict[str, Any]) -> Any:
    vm = await engine.vms.stop(_arg(a, "ref"))
    return _vm_view(engine, vm.id)


async def _host_remove(engine: Engine, a: dict[str, Any]) -> Any:
    await engine.remove_host(_arg(a, "ref"))
    return {"removed": a["ref"]}


async def _vm_remove(engine: Engine, a: dict[str, Any]) -> Any:
    await engine.vms.remove(_arg(a, "ref"))
    return {"removed": a["ref"]}


async def _host_renew(engine: Engine, a: dict[str, Any]) -> Any:
    return (await engine.renew_host_cert(_arg(a, "ref"))).view()


async def _fence_agent(engine: Engine, a: dict[str, Any]) -> Any:
    return (await engine.set_fence_agent(_arg(a, "ref"), _arg(a, "argv", list))).view()


async def _events(engine: Engine, a: dict[str, Any]) -> Any:
    limit = _arg(a, "limit", int, 50)
    return [e.view() for e in await engine.events(limit, _arg(a, "after", int, 0))]


async def _ready(value: Any) -> Any:
    return value


OPS: dict[str, Op] = {
    "host.add": _host_add,
    "host.list": lambda e, a: _ready([h.view() for h in e.list_hosts()]),
    "host.show": lambda e, a: _ready(e.host(_arg(a, "ref")).view()),
    "host.remove": _host_remove,
    "host.maintenance": lambda e, a: _maintenance(e, a, True),
    "host.activate": lambda e, a: _maintenance(e, a, False),
    "host.renew": _host_renew,
    "host.fence_agent": lambda e, a: _fence_agent(e, a),
    "vm.create": _vm_create,
    "vm.list": lambda e, a: _ready([_vm_view(e, v.id) for v in
                                    sorted(e.ctx.vms.values(), key=lambda v: v.name)]),
    "vm.show": lambda e, a: _ready(_vm_view(e, _arg(a, "ref"))),
    "vm.start": _vm_start,
    "vm.stop": _vm_stop,
    "vm.remove": _vm_remove,
    "vm.ticket": lambda e, a: e.vms.ticket(_arg(a, "ref"), _arg(a, "ttl", int, None)),
    "events": _events,
}


async def handle(engine: Engine, request: Any) -> dict[str, Any]:
    try:
        if not isinstance(request, dict) or request.get("op") not in OPS:
            raise InvalidInput(f"unknown operation {request.get('op') if isinstance(request, dict) else request!r}")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidInput("args must be an object")
        return {"ok": True, "result": await OPS[request["op"]](engine, args)}
    except EngineError as exc:
        return {"ok": False, "error": exc.as_dict()}


class ControlServer:
    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists():
            if await _answers(self.path):
                raise EngineError(f"another engine-lite serves {self.path}")
            self.path.unlink()
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._client, str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except json.JSONDecodeError:
                    answer = {"ok": False, "error": {"kind": "invalid_input",
                                                     "message": "request is not JSON"}}
                else:
                    answer = await handle(self.engine, request)
                writer.write(json.dumps(answer, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()


async def _answers(path: Path) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


async def request(path: Path, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to a running ``engine-lite serve`` (used by the CLI)."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=64 * MAX_REQUEST)
    try:
        writer.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    if not line:
        raise ConnectionError("engine-lite closed the connection without an answer")
    answer: dict[str, Any] = json.loads(line)
    return answer
