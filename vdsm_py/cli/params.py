"""Turning ``key=value`` words and ``-f params.json`` into typed call parameters.

VDSM's own ``vdsm-client`` sends every ``key=value`` as a string; this one reads the schema:
``memSize=1024`` becomes the integer 1024 when the verb's ``memSize`` is an ``int``,
``force=true`` a boolean, objects and lists are parsed as JSON, strings stay as typed. The
finished parameters are then checked with the schema's own validator, so a wrong call is
refused here, before any connection, with a message naming the parameter and what it
should be.

Must not: connect anywhere or print; errors are raised as :class:`ParamError`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from vdsm_py.errors import VdsmError
from vdsm_py.rpc.docs import enum_values, type_label
from vdsm_py.rpc.schema import Schema, Verb


class ParamError(ValueError):
    """A parameter the schema does not accept; the message names it and what it expects."""


def expected_text(schema: Schema, spec: dict[str, Any]) -> str:
    """What a value of this type looks like, e.g. ``Color: one of red, green``."""
    label = type_label(spec)
    resolved = schema.resolve(spec)
    kind = resolved.get("type", "any")
    if kind in ("object", "map"):
        return "a JSON object" if label == "object" else f"{label} as a JSON object"
    if kind == "list":
        return f"{label} as a JSON list"
    if kind == "boolean":
        return "true or false"
    if resolved is not spec:
        inner = type_label({k: v for k, v in resolved.items() if k != "description"})
        return f"{label}: {inner}"
    return label


def parse_value(schema: Schema, spec: dict[str, Any], text: str, name: str) -> Any:
    """One command-line value typed by the schema; ParamError when it cannot be read."""
    resolved = schema.resolve(spec)
    kind = resolved.get("type", "any")

    def bad(detail: str = "") -> ParamError:
        got = f"got {text!r}" + (f" ({detail})" if detail else "")
        return ParamError(f"parameter {name}: expected {expected_text(schema, spec)}, {got}")

    if kind == "string":
        return text
    if kind == "int":
        try:
            return int(text, 10)
        except ValueError:
            raise bad() from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise bad() from None
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise bad()
    if kind == "enum":
        for value in enum_values(resolved):
            if str(value) == text:
                return value
        raise bad()
    if kind in ("list", "map", "object"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise bad(f"not JSON: {exc.msg}") from None
        want = list if kind == "list" else dict
        if not isinstance(value, want):
            raise bad()
        return value
    # "any": JSON when it parses, the text itself otherwise.
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(schema: Schema, verb: Verb, words: Sequence[str]) -> dict[str, Any]:
    """``["memSize=1024", "vmId=..."]`` → typed parameters of ``verb``."""
    by_name = {p.name: p for p in verb.params}
    params: dict[str, Any] = {}
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or not name:
            raise ParamError(f"expected name=value, got {word!r}")
        param = by_name.get(name)
        if param is None:
            raise ParamError(_unknown(verb, name))
        if name in params:
            raise ParamError(f"parameter {name} given twice")
        params[name] = parse_value(schema, param.type.spec, text, name)
    return params


def parse_untyped(words: Sequence[str]) -> dict[str, Any]:
    """``key=value`` words without a schema: JSON when the value parses as JSON, else text."""
    params: dict[str, Any] = {}
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or not name:
            raise ParamError(f"expected name=value, got {word!r}")
        if name in params:
            raise ParamError(f"parameter {name} given twice")
        params[name] = parse_value(_NO_SCHEMA, {"type": "any"}, text, name)
    return params


_NO_SCHEMA = Schema()


def _unknown(verb: Verb, name: str) -> str:
    known = ", ".join(p.name for p in verb.params) or "none"
    return f"{verb.method} has no parameter {name!r} (its parameters: {known})"


def read_params_file(path: str, stdin: TextIO | None = None) -> dict[str, Any]:
    """Typed parameters from a JSON file holding one object; ``-`` reads standard input."""
    try:
        if path == "-":
            text = (stdin or sys.stdin).read()
            where = "standard input"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = path
    except OSError as exc:
        raise ParamError(f"cannot read parameters file {path}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamError(
            f"{where}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise ParamError(f"{where}: expected a JSON object of parameters")
    return value


def build_params(
    schema: Schema,
    verb: Verb,
    words: Sequence[str],
    file_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters to send: the file's, overridden by ``key=value`` words, validated.

    Validation is the daemon's own (:meth:`Schema.validate_params`), so a call refused here
    would have been refused by the daemon with the same words.
    """
    params = dict(file_params or {})
    for name in params:
        if name not in {p.name for p in verb.params}:
            raise ParamError(_unknown(verb, name))
    params.update(parse_assignments(schema, verb, words))
    try:
        schema.validate_params(verb, params)
    except VdsmError as exc:
        raise ParamError(_with_expectation(schema, verb, exc)) from None
    return params


def _with_expectation(schema: Schema, verb: Verb, exc: VdsmError) -> str:
    """The validator's message, plus the expected type of a top-level parameter."""
    name = exc.data.get("param") if isinstance(exc.data, dict) else None
    for p in verb.params:
        if p.name == name:
            return f"{exc.message} (expected {expected_text(schema, p.type.spec)})"
    return exc.message
