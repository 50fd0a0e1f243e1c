"""``vdsmd``: run the daemon in the foreground (systemd runs it as Type=notify)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from vdsm_py import config as config_module
from vdsm_py import devhost
from vdsm_py.daemon import Daemon, StartupError
from vdsm_py.service import logsetup

log = logging.getLogger("vdsm_py.daemon")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdsmd", description="vdsm_py host agent (foreground).")
    p.add_argument(
        "--config", type=Path, default=None,
        help=f"configuration file (default {config_module.DEFAULT_CONFIG} if it exists)",
    )
    p.add_argument(
        "--dev", type=Path, metavar="DIR",
        help="self-contained development host rooted at DIR: own PKI, state, loopback, "
        "libvirt's embedded test driver",
    )
    p.add_argument("--port", type=int, help="listen on this port (overrides the config)")
    p.add_argument(
        "--insecure", action="store_true",
        help="DEVELOPMENT ONLY: plaintext, no TLS, no client authentication",
    )
    p.add_argument("--log-level", help="override the configured log level")
    return p


def load_config(args: argparse.Namespace) -> config_module.Config:
    if args.dev:
        if args.config:
            raise config_module.ConfigError("--dev and --config exclude each other")
        cfg = devhost.prepare(args.dev, args.port)
    else:
        path = args.config
        if path is None and config_module.DEFAULT_CONFIG.exists():
            path = config_module.DEFAULT_CONFIG
        cfg = config_module.load(path)
        if args.port is not None:
            cfg = replace(cfg, addresses=replace(cfg.addresses, port=args.port))
    if args.insecure:
        cfg = replace(cfg, pki=replace(cfg.pki, insecure=True))
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
    except config_module.ConfigError as exc:
        print(f"vdsmd: configuration error: {exc}", file=sys.stderr)
        return 2
    logsetup.setup(args.log_level or cfg.daemon.log_level)
    try:
        asyncio.run(Daemon(cfg).run())
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
