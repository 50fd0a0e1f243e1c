"""``vdsm-tool restore-nets``: make the host's networks the persisted (safe) ones.

Run at boot before the daemon (and by the daemon itself at start-up): networks and bonds
changed since the last ``Host.setSafeNetworkConfig`` are removed, persisted ones missing
from the kernel are rebuilt. Reads the daemon's configuration for the state directory and
the managed network namespace. Must not run while the daemon is changing networks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vdsm_py import config as config_module
from vdsm_py.errors import VdsmError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore-nets", help="restore the persisted network configuration")
    p.add_argument(
        "--config", type=Path, default=None,
        help=f"configuration file (default {config_module.DEFAULT_CONFIG} if it exists)",
    )
    p.add_argument("--state-dir", type=Path, help="override [daemon] state_dir")
    p.add_argument("--netns", help="override [network] netns (network namespace to manage)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from network.persistence import ConfigStore
    from network.setup import NetworkSetup
    from network.validate import NicFilter

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    path = args.config
    if path is None and config_module.DEFAULT_CONFIG.exists():
        path = config_module.DEFAULT_CONFIG
    try:
        cfg = config_module.load(path)
    except config_module.ConfigError as exc:
        print(f"vdsm-tool restore-nets: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or cfg.daemon.state_dir
    netns = cfg.network.netns if args.netns is None else args.netns
    setup = NetworkSetup(
        netns, ConfigStore(state_dir),
        NicFilter(p.strip() for p in cfg.network.fake_nics.split(",")),
    )
    try:
        restored = setup.restore()
    except VdsmError as exc:
        print(f"vdsm-tool restore-nets: error {exc.code}: {exc}", file=sys.stderr)
        return 1
    finally:
        setup.close()
    print(f"restored networks: {', '.join(sorted(restored.networks)) or '(none)'}; "
          f"bonds: {', '.join(sorted(restored.bondings)) or '(none)'}")
    return 0
