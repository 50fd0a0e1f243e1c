"""``engine-lite``: the admin's command line.

``engine-lite serve`` runs the engine (monitors, scheduling) with its control socket; every
other command is one request to it: ``host add/list/show/remove/maintenance/activate/renew/
fence-agent``,
``vm create/start/stop/list/show/remove/ticket``, ``events``. ``--json`` prints the answer as
JSON; otherwise a readable table. Exit codes: 0 done, 1 the engine refused (the message says
why), 2 bad usage, 3 no engine running. The state directory comes from ``--state``,
``$ENGINE_LITE_STATE``, or ``/var/lib/engine-lite`` (root) / ``~/.local/state/engine-lite``.
This module parses, asks and prints; it holds no engine logic.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_ENGINE = 0, 1, 2, 3
REQUEST_TIMEOUT = 300.0


def default_state() -> Path:
    if os.environ.get("ENGINE_LITE_STATE"):
        return Path(os.environ["ENGINE_LITE_STATE"])
    if os.geteuid() == 0:
        return Path("/var/lib/engine-lite")
    return Path.home() / ".local" / "state" / "engine-lite"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine-lite", description=__doc__.splitlines()[0])
    p.add_argument("--state", type=Path, default=None, help="state directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    top = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = top.add_parser("serve", help="run the engine (foreground)")
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    host = top.add_parser("host", help="enroll and manage hosts").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    a = host.add_parser("add", help="enroll a host (its key stays on the host)")
    a.add_argument("name")
    where = a.add_mutually_exclusive_group(required=True)
    where.add_argument("--dev-dir", type=Path, help="a vdsmd --dev DIR host on this machine "
                       "(told to reload the engine's certificates with SIGHUP)")
    where.add_argument("--pki-dir", type=Path, help="the PKI directory of a host on this machine")
    a.add_argument("--address", default="127.0.0.1", help="address (default %(default)s)")
    a.add_argument("--port", type=int, help="port (dev hosts: read from DIR)")
    a.add_argument("--restart-cmd", help="with --pki-dir: command restarting the host daemon")
    a.add_argument("--no-wait", action="store_true", help="return before the host is Up")
    for action, text in (("list", "list hosts"),):
        host.add_parser(action, help=text)
    for action, text in (("show", "show a host"), ("remove", "remove a host"),
                         ("maintenance", "no new VMs on the host"),
                         ("activate", "end maintenance"), ("renew", "renew its certificate")):
        host.add_parser(action, help=text).add_argument("host")

    f = host.add_parser("fence-agent", help="set the fence agent (argv; none: clear it)")
    f.add_argument("host")
    f.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARG...]",
                   help="absolute path of the agent and its arguments (no shell)")

    vm = top.add_parser("vm", help="define and run VMs").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    c = vm.add_parser("create", help="define a VM")
    c.add_argument("name")
    c.add_argument("--memory", type=int, required=True, help="MiB")
    c.add_argument("--vcpus", type=int, default=1)
    c.add_argument("--nic", action="append", default=[], metavar="NETWORK[,mac=MAC]")
    c.add_argument("--disk", action="append", default=[],
                   metavar="DOMAIN:IMAGE:VOLUME[,format=cow][,iface=virtio][,pool=UUID]"
                   "[,boot=N]", help="a volume on a storage domain (UUIDs)")
    c.add_argument("--custom", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--ha", action="store_true", help="highly available: restart if it dies")
    vm.add_parser("list", help="list VMs")
    for action, text in (("start", "schedule and start"), ("stop", "power off"),
                         ("show", "show a VM"), ("remove", "delete a stopped VM")):
        vm.add_parser(action, help=text).add_argument("vm")
    t = vm.add_parser("ticket", help="console ticket (host, port, password)")
    t.add_argument("vm")
    t.add_argument("--ttl", type=int, help="validity in seconds (default 120)")

    e = top.add_parser("events", help="recent events")
    e.add_argument("--limit", type=int, default=50)
    return p


def request_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.cmd == "events":
        return "events", {"limit": args.limit}
    if args.cmd == "host":
        if args.action == "add":
            return "host.add", {
                "name": args.name, "address": args.address, "port": args.port,
                "dev_dir": str(args.dev_dir.resolve()) if args.dev_dir else None,
                "pki_dir": str(args.pki_dir.resolve()) if args.pki_dir else None,
                "apply": "command" if args.restart_cmd else "manual",
                "command": args.restart_cmd, **({"wait": False} if args.no_wait else {})}
        if args.action == "list":
            return "host.list", {}
        if args.action == "fence-agent":
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return "host.fence_agent", {"ref": args.host, "argv": argv}
        return f"host.{args.action}", {"ref": args.host}
    if args.action == "create":
        return "vm.create", {"name": args.name, "memory": args.memory, "vcpus": args.vcpus,
                             "nics": [_nic(n) for n in args.nic],
                             "disks": [_disk(d) for d in args.disk],
                             "custom": dict(_pair(c) for c in args.custom), "ha": args.ha}
    if args.action == "list":
        return "vm.list", {}
    if args.action == "ticket":
        return "vm.ticket", {"ref": args.vm, "ttl": args.ttl}
    return f"vm.{args.action}", {"ref": args.vm}


def _nic(text: str) -> dict[str, str]:
    network, *opts = text.split(",")
    nic = {"network": network}
    nic.update(_pair(o) for o in opts)
    return nic


def _disk(text: str) -> dict[str, Any]:
    ids, *opts = text.split(",")
    parts = ids.split(":")
    if len(parts) != 3:
        raise SystemExit(f"engine-lite: expected DOMAIN:IMAGE:VOLUME, not {ids!r}")
    disk: dict[str, Any] = dict(zip(("domainID", "imageID", "volumeID"), parts, strict=True))
    names = {"format": "format", "iface": "iface", "pool": "poolID", "boot": "bootOrder"}
    for key, value in (_pair(o) for o in opts):
        if key not in names:
            raise SystemExit(f"engine-lite: unknown disk option {key!r} "
                             f"(use {', '.join(names)})")
        disk[names[key]] = int(value) if key == "boot" and value.isdigit() else value
    return disk


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"engine-lite: expected KEY=VALUE, not {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state = args.state or default_state()
    if args.cmd == "serve":
        return serve(state, verbose=args.verbose)
    from engine_lite.control import request

    op, payload = request_of(args)
    sock = state / "engine.sock"
    try:
        answer = asyncio.run(request(sock, op, payload, REQUEST_TIMEOUT))
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"engine-lite: no engine running for {state} (start it: engine-lite --state "
              f"{state} serve)", file=sys.stderr)
        return EXIT_NO_ENGINE
    if not answer.get("ok"):
        error = answer.get("error", {})
        if args.json:
            print(json.dumps(error, indent=2))
        print(f"engine-lite: {error.get('message', 'failed')}", file=sys.stderr)
        return EXIT_REFUSED
    result = answer.get("result")
    print(json.dumps(result, indent=2) if args.json else render(op, result))
    return EXIT_OK


def render(op: str, result: Any) -> str:
    if op == "host.list":
        return _table(result, ["name", "status", "address", "port", "mem_mib", "memFree",
                               "status_reason"])
    if op == "vm.list":
        return _table(result, ["name", "status", "host", "mem_mib", "vcpus", "desired",
                               "last_error"])
    if op == "events":
        for e in result:
            e["time"] = dt.datetime.fromtimestamp(e["time"]).strftime("%H:%M:%S")
        return _table(result, ["id", "time", "severity", "kind", "message"])
    if isinstance(result, dict):
        width = max((len(k) for k in result), default=0)
        return "\n".join(f"{k:<{width}}  {_cell(v)}" for k, v in result.items())
    return str(result)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def serve(state: Path, *, verbose: bool = False) -> int:
    from engine_lite.config import EngineConfig
    from engine_lite.control import ControlServer
    from engine_lite.engine import Engine
    from engine_lite.errors import EngineError

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        engine = Engine(EngineConfig.load(state))
        await engine.start()
        control = ControlServer(engine, engine.config.socket_path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await control.start()
            logging.getLogger("engine_lite").info("serving on %s", control.path)
            await stop.wait()
        finally:
            await control.close()
            await engine.close()

    try:
        asyncio.run(run())
    except EngineError as exc:
        print(f"engine-lite: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
