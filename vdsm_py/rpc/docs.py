"""The API reference (``docs/api.md``), generated from the schema.

Owns: turning a loaded :class:`~vdsm_py.rpc.schema.Schema` into Markdown, and the short
human spelling of a type (``list of VmStats``, ``int (min 0)``) that the CLI's help shares.
The output depends on the schema alone (namespaces, verbs and types in name order, no dates,
no paths of this machine), so ``docs/api.md`` can be checked for staleness by comparing text.

Must not: import the transport or the dispatcher, or read anything but the schema.
Regenerate with ``vdsm-tool api-docs -o docs/api.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vdsm_py.rpc.schema import PRIMITIVES, Schema, Verb

GENERATOR_COMMAND = "vdsm-tool api-docs -o docs/api.md"

NameFormatter = Callable[[str], str]


def _plain(name: str) -> str:
    return name


def type_label(spec: dict[str, Any], name_fmt: NameFormatter = _plain) -> str:
    """A short human reading of a type use, e.g. ``list of OsInfo`` or ``int (min 0)``.

    ``name_fmt`` decorates the names of declared types (the docs turn them into links).
    """
    t = str(spec.get("type", "any"))
    if t == "list":
        label = f"list of {type_label(spec.get('items') or {}, name_fmt)}"
    elif t == "map":
        label = f"map of string to {type_label(spec.get('values') or {}, name_fmt)}"
    elif t == "enum":
        label = "one of " + ", ".join(str(v) for v in enum_values(spec))
    elif t in PRIMITIVES or t == "object":
        label = t
    else:
        label = name_fmt(t)
    notes = _constraints(spec)
    return f"{label} ({', '.join(notes)})" if notes else label


def _constraints(spec: dict[str, Any]) -> list[str]:
    notes = []
    if "format" in spec:
        notes.append(str(spec["format"]))
    for key, word in (
        ("min", "min"),
        ("max", "max"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
    ):
        if key in spec:
            notes.append(f"{word} {spec[key]}")
    if "pattern" in spec:
        notes.append(f"pattern {spec['pattern']}")
    return notes


def enum_values(spec: dict[str, Any]) -> list[Any]:
    """An enum's values; ``values`` may be a list or a mapping of value → description."""
    values = spec.get("values") or []
    return list(values.keys()) if isinstance(values, dict) else list(values)


def default_text(value: Any) -> str:
    """A default value as it would be written in JSON."""
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class FieldRow:
    """One row of a parameter or property table (nested inline objects get dotted names)."""

    name: str
    spec: dict[str, Any]
    required: bool
    has_default: bool
    default: Any
    description: str


def inline_object(spec: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The inline object (with properties) a type use contains, and the path suffix to it.

    ``{type: object, properties: ...}`` → ``("", spec)``; a list of such → ``("[]", items)``;
    a map of such → ``(".*", values)``. Named types are documented on their own, so they
    are not followed.
    """
    t = spec.get("type")
    if t == "object" and spec.get("properties"):
        return "", spec
    if t == "list" and isinstance(spec.get("items"), dict):
        found = inline_object(spec["items"])
        return ("[]" + found[0], found[1]) if found else None
    if t == "map" and isinstance(spec.get("values"), dict):
        found = inline_object(spec["values"])
        return (".*" + found[0], found[1]) if found else None
    return None


def property_rows(spec: dict[str, Any], prefix: str = "") -> Iterator[FieldRow]:
    """Rows for an object's properties, descending into inline objects."""
    for pname, pspec in (spec.get("properties") or {}).items():
        pspec = pspec or {}
        name = f"{prefix}{pname}"
        yield FieldRow(
            name=name,
            spec=pspec,
            required=bool(pspec.get("required", False)),
            has_default="default" in pspec,
            default=pspec.get("default"),
            description=str(pspec.get("description", "")).strip(),
        )
        nested = inline_object(pspec)
        if nested:
            yield from property_rows(nested[1], f"{name}{nested[0]}.")


def param_rows(verb: Verb) -> Iterator[FieldRow]:
    """Rows for a verb's parameters, descending into inline object parameters."""
    for p in verb.params:
        yield FieldRow(p.name, p.type.spec, p.required, not p.required, p.default, p.description)
        nested = inline_object(p.type.spec)
        if nested:
            yield from property_rows(nested[1], f"{p.name}{nested[0]}.")


# -- Markdown ---------------------------------------------------------------------------


def _anchor(name: str) -> str:
    """The anchor Markdown renderers derive from a ``### name`` heading (GitHub's rule:
    lower case, punctuation other than ``-``/``_`` dropped), so no raw HTML is needed."""
    return re.sub(r"[^a-z0-9_\- ]", "", name.lower()).replace(" ", "-")


def _type_link(name: str) -> str:
    return f"[{name}](#{_anchor(name)})"


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell (one line, pipes escaped)."""
    return " ".join(text.split()).replace("|", "\\|")


def _paragraph(text: str) -> str:
    return " ".join(text.split())


def _required_cell(row: FieldRow) -> str:
    if row.required:
        return "yes"
    if row.has_default:
        return f"no, default `{default_text(row.default)}`"
    return "no"


def _table(header: str, rows: list[FieldRow]) -> list[str]:
    lines = [
        f"| {header} | Type | Required | Description |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row.name}` | {_cell(type_label(row.spec, _type_link))} "
            f"| {_cell(_required_cell(row))} | {_cell(row.description)} |"
        )
    return lines


def _verb_section(verb: Verb) -> list[str]:
    lines = [f"### {verb.method}", ""]
    if verb.description:
        lines += [_paragraph(verb.description), ""]
    facts = []
    if verb.added:
        facts.append(f"Added in {verb.added}.")
    if not verb.available_during_recovery:
        facts.append("Answers 99 (RecoveryInProgress) while the daemon recovers.")
    if facts:
        lines += [" ".join(facts), ""]
    rows = list(param_rows(verb))
    if rows:
        lines += ["Parameters:", ""] + _table("Name", rows) + [""]
    else:
        lines += ["Parameters: none.", ""]
    if verb.returns is None:
        lines += ["Returns: nothing.", ""]
    else:
        spec = verb.returns.spec
        ret = f"Returns: {type_label(spec, _type_link)}"
        if verb.returns.description:
            ret += f" — {_paragraph(verb.returns.description)}"
        lines += [ret, ""]
        nested = inline_object(spec)
        if nested:
            suffix, obj = nested
            prefix = f"{suffix.lstrip('.')}." if suffix else ""
            lines += _table("Field", list(property_rows(obj, prefix))) + [""]
    return lines


def _type_section(name: str, spec: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    description = str(spec.get("description", "")).strip()
    t = spec.get("type", "any")
    if description:
        lines += [_paragraph(description), ""]
    if t == "object":
        rows = list(property_rows(spec))
        if rows:
            lines += ["An object with these properties:", ""] + _table("Property", rows)
        else:
            lines.append("An object with no declared properties.")
        if spec.get("additional"):
            lines += ["", "Other properties are accepted as well."]
        lines.append("")
    elif t == "enum":
        lines += ["One of:", ""]
        values = spec.get("values") or []
        for value in enum_values(spec):
            text = f"- `{value}`"
            if isinstance(values, dict) and values.get(value):
                text += f" — {_paragraph(str(values[value]))}"
            lines.append(text)
        lines.append("")
    else:
        lines += [f"Same as {type_label(spec, _type_link)}.", ""]
    return lines


def render_markdown(schema: Schema) -> str:
    """The whole reference as Markdown; the same schema always gives the same text."""
    namespaces = sorted(schema.namespaces.values(), key=lambda ns: ns.name)
    lines = [
        "# vdsm_py API reference",
        "",
        (
            "Generated from the schema in `vdsm_py/api/schema/` by "
            f"`{GENERATOR_COMMAND}`; do not edit by hand. Every verb is called as JSON-RPC "
            "method `Namespace.verb` with named parameters (see `docs/ARCHITECTURE.md`)."
        ),
        "",
        "## Contents",
        "",
    ]
    for ns in namespaces:
        verbs = ", ".join(f"[{v}](#{_anchor(f'{ns.name}.{v}')})" for v in sorted(ns.verbs))
        lines.append(f"- **{ns.name}**: {verbs}" if verbs else f"- **{ns.name}**")
    if schema.types:
        lines.append("- [Types](#types)")
    lines.append("")
    for ns in namespaces:
        lines += [f"## {ns.name}", ""]
        if ns.description:
            lines += [_paragraph(ns.description), ""]
        for vname in sorted(ns.verbs):
            lines += _verb_section(ns.verbs[vname])
    if schema.types:
        lines += ["## Types", ""]
        for tname in sorted(schema.types):
            lines += _type_section(tname, schema.types[tname] or {})
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
