"""``vdsm-tool api-docs``: write or check the generated API reference (``docs/api.md``).

Only argument handling lives here; the Markdown comes from :mod:`vdsm_py.rpc.docs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdsm_py.rpc.docs import GENERATOR_COMMAND, render_markdown
from vdsm_py.rpc.schema import Schema


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "api-docs",
        help="generate the Markdown API reference from the schema",
        description="Generate the Markdown API reference from the API schema.",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write to this file (e.g. docs/api.md) instead of stdout",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the --output file differs from what the schema gives",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = render_markdown(Schema.load())
    if args.check:
        if args.output is None:
            print("vdsm-tool api-docs: --check needs -o FILE", file=sys.stderr)
            return 2
        try:
            current = args.output.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"{args.output}: cannot read: {exc.strerror}", file=sys.stderr)
            return 1
        if current != text:
            print(
                f"{args.output} is stale; regenerate it with {GENERATOR_COMMAND}", file=sys.stderr
            )
            return 1
        return 0
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
