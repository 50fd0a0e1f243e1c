"""``vdsm-client``: call one verb of a vdsm_py (or VDSM) host from the command line.

    vdsm-client [options] Namespace verb [name=value ...] [-f params.json]
    vdsm-client [options] --watch-events [--count N]

Values are typed by the API schema (``memSize=1024`` is sent as an integer when the schema
says ``int``) and checked before anything is sent; help for namespaces, verbs and
parameters comes from the same schema. ``--unchecked`` skips the schema for a host whose
API this client does not know (values then go as JSON when they parse, else as strings).

Exit codes: 0 success; 1 the host answered with an error (printed as ``error CODE:
MESSAGE`` on stderr); 2 bad command line or parameters (nothing was sent); 3 the host could
not be reached (connection refused, TLS handshake refused, unreadable certificates, time-out,
connection lost); 130 interrupted by Ctrl-C during a call (``--watch-events`` is meant to be
stopped that way and exits 0).

This module owns argument handling and the exit codes only; parameter typing lives in
:mod:`vdsm_py.cli.params`, help text in :mod:`vdsm_py.cli.client_help`, output formats in
:mod:`vdsm_py.cli.output` and the connection set-up in :mod:`vdsm_py.cli.client_conn`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from vdsm_py.cli import client_help
from vdsm_py.cli.client_conn import (
    ConnectError,
    RpcError,
    Target,
    TargetError,
    call,
    resolve_target,
    watch_events,
)
from vdsm_py.cli.output import FORMATS, format_event, format_result
from vdsm_py.cli.params import ParamError, build_params, parse_untyped, read_params_file
from vdsm_py.rpc.schema import Namespace, Schema, Verb

EXIT_OK = 0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130  # Ctrl-C during a call (stopping --watch-events with it exits 0)

DEFAULT_TIMEOUT = 60.0

EPILOG = """\
exit codes: 0 success (also --watch-events stopped with Ctrl-C); 1 the host answered with an
error ("error CODE: MESSAGE" on stderr); 2 bad command line or parameters, nothing sent;
3 the host could not be reached (refused, TLS failure, unreadable certificates, time-out,
connection lost); 130 interrupted during a call."""


class UsageError(Exception):
    """A command line that cannot be run; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdsm-client",
        usage="vdsm-client [options] NAMESPACE VERB [name=value ...] [-f params.json]\n"
        "       vdsm-client [options] --watch-events [--count N]",
        description="Call a verb of a vdsm_py host over mutual-TLS STOMP JSON-RPC. "
        "Parameter values are typed by the API schema.",
        epilog=EPILOG,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="show help; after NAMESPACE or VERB, help for that namespace or verb",
    )
    c = p.add_argument_group("connection")
    c.add_argument("-a", "--host", help="host to connect to (default localhost)")
    c.add_argument("-p", "--port", type=int, help="port (default 54321)")
    c.add_argument(
        "--pki-dir",
        metavar="DIR",
        help="PKI directory in VDSM's layout (default /etc/pki/vdsm): "
        "certs/cacert.pem, certs/vdsmcert.pem, keys/vdsmkey.pem",
    )
    c.add_argument("--cert", metavar="FILE", help="client certificate (with --key, --cacert)")
    c.add_argument("--key", metavar="FILE", help="client private key")
    c.add_argument("--cacert", metavar="FILE", help="CA certificate that signed the host's")
    c.add_argument(
        "--dev", metavar="DIR", help="talk to a 'vdsmd --dev DIR' host: its PKI (DIR/pki) and port"
    )
    c.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, no TLS (only for a daemon started with --insecure)",
    )
    c.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for connecting and for the answer (default {DEFAULT_TIMEOUT:g})",
    )
    r = p.add_argument_group("call")
    r.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="JSON object of typed parameters ('-' reads stdin); name=value "
        "words override its entries",
    )
    r.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="json",
        help="json (default: indented, sorted keys) or table",
    )
    r.add_argument("--flow-id", metavar="ID", help="flow (correlation) id sent with the call")
    r.add_argument(
        "--unchecked",
        action="store_true",
        help="do not check the verb and parameters against this client's schema (for a "
        "host with a newer API, or a VDSM host): values are sent as JSON when they parse "
        "as JSON, else as strings, and the host alone judges them",
    )
    e = p.add_argument_group("events")
    e.add_argument(
        "--watch-events",
        action="store_true",
        help="print each event as one JSON line as it arrives, until interrupted",
    )
    e.add_argument("--count", type=int, metavar="N", help="with --watch-events: stop after N")
    p.add_argument("words", nargs="*", metavar="NAMESPACE VERB name=value", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv, Schema.load(), sys.stdout, sys.stderr, sys.stdin)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (vdsm-client ... | head): not our failure. Point stdout at
        # /dev/null so that the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def run(
    argv: Sequence[str] | None,
    schema: Schema,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None = None,
) -> int:
    """The whole command: parse, check, call, print; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit:  # argparse has printed what is wrong
        return EXIT_USAGE
    try:
        if args.help:
            out.write(_help(parser, schema, args.words) + "\n")
            return EXIT_OK
        if args.timeout <= 0:
            raise UsageError("--timeout must be more than 0 seconds")
        if args.watch_events:
            return _watch(args, out, err)
        if args.count is not None:
            raise UsageError("--count goes with --watch-events")
        method, params = _method_and_params(schema, args, stdin)
        target = resolve_target(args)
    except (UsageError, TargetError, ParamError) as exc:
        err.write(f"vdsm-client: {exc}\n")
        return EXIT_USAGE
    try:
        result = call(target, method, params, timeout=args.timeout, flow_id=args.flow_id)
    except RpcError as exc:
        err.write(f"error {exc.code}: {exc.message}\n")
        return EXIT_RPC_ERROR
    except ConnectError as exc:
        err.write(f"vdsm-client: {exc}\n")
        return EXIT_CONNECTION
    out.write(format_result(result, args.output) + "\n")
    return EXIT_OK


def _help(parser: argparse.ArgumentParser, schema: Schema, words: list[str]) -> str:
    if not words:
        return parser.format_help().rstrip() + "\n\n" + client_help.namespaces_help(schema)
    if len(words) == 1 and "." not in words[0]:
        return client_help.namespace_help(_find_namespace(schema, words[0]))
    return client_help.verb_help(schema, _find_verb(schema, words)[0])


def _find_namespace(schema: Schema, name: str) -> Namespace:
    namespace = schema.namespaces.get(name)
    if namespace is None:
        hint = client_help.suggest(name, list(schema.namespaces))
        raise UsageError(f"unknown namespace {name!r}{hint}; 'vdsm-client --help' lists them")
    return namespace


def _method_and_params(
    schema: Schema, args: argparse.Namespace, stdin: TextIO | None
) -> tuple[str, dict[str, Any]]:
    """The JSON-RPC method and the parameters to send, checked unless ``--unchecked``."""
    file_params = read_params_file(args.file, stdin) if args.file else None
    if args.unchecked:
        ns_name, verb_name, words = _split_method(args.words)
        params = dict(file_params or {})
        params.update(parse_untyped(words))
        return f"{ns_name}.{verb_name}", params
    verb, words = _find_verb(schema, args.words)
    try:
        return verb.method, build_params(schema, verb, words, file_params)
    except ParamError as exc:
        raise ParamError(f"{verb.method}: {exc}") from None


def _split_method(words: list[str]) -> tuple[str, str, list[str]]:
    """``Namespace verb ...`` or ``Namespace.verb ...`` → namespace, verb, the other words."""
    if not words:
        raise UsageError("no verb given; 'vdsm-client --help' lists the namespaces")
    if "." in words[0] and "=" not in words[0]:
        ns_name, _, verb_name = words[0].partition(".")
        rest = words[1:]
    else:
        ns_name, verb_name = words[0], (words[1] if len(words) > 1 else "")
        rest = words[2:]
    if not verb_name or "=" in verb_name:
        raise UsageError(
            f"no verb given for {ns_name}; 'vdsm-client {ns_name} --help' lists its verbs"
        )
    return ns_name, verb_name, rest


def _find_verb(schema: Schema, words: list[str]) -> tuple[Verb, list[str]]:
    """The verb named by ``Namespace verb`` or ``Namespace.verb``, and the words after it."""
    if words:  # an unknown namespace is the first thing worth saying
        _find_namespace(schema, words[0].partition(".")[0])
    ns_name, verb_name, rest = _split_method(words)
    namespace = _find_namespace(schema, ns_name)
    verb = namespace.verbs.get(verb_name)
    if verb is None:
        hint = client_help.suggest(verb_name, list(namespace.verbs))
        raise UsageError(
            f"{ns_name} has no verb {verb_name!r}{hint}; 'vdsm-client {ns_name} --help' lists them"
        )
    return verb, rest


def _watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.words:
        raise UsageError("--watch-events takes no namespace, verb or parameters")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    target: Target = resolve_target(args)
    events = watch_events(target, timeout=args.timeout, count=args.count)
    try:
        with contextlib.closing(events):
            for method, params in events:
                out.write(format_event(method, params) + "\n")
                out.flush()
    except ConnectError as exc:
        err.write(f"vdsm-client: {exc}\n")
        return EXIT_CONNECTION
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
