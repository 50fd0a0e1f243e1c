"""``vdsm-tool config-example``: print the documented configuration file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdsm_py import config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config-example", help="print every setting with its default and doc")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = config.render_example()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
