"""``vdsm-tool``: admin tasks on the host (PKI, generated files, more later).

Each task family lives in its own module that exposes ``register(subparsers)``; this module
only assembles them. A task's function returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add subcommands; each has register(subparsers: argparse._SubParsersAction).
TASK_MODULES = (
    "vdsm_py.cli.tool_config",
    "vdsm_py.cli.tool_docs",
    "vdsm_py.cli.tool_network",
    "vdsm_py.cli.tool_pki",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdsm-tool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name in TASK_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
