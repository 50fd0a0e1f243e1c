"""``vdsm-client`` help text, written from the API schema.

Three levels: the namespaces (``vdsm-client --help``), one namespace's verbs with a one-line
summary each (``vdsm-client Host --help``), and one verb's parameters with their types,
defaults and descriptions plus its return type (``vdsm-client Host getStats --help``).
Also the "did you mean" suggestions for misspelt namespaces and verbs.

Must not: parse arguments or print; every function returns text.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from typing import Any

from vdsm_py.cli.params import expected_text
from vdsm_py.rpc.docs import default_text, type_label
from vdsm_py.rpc.schema import Namespace, Schema, Verb

WIDTH = 79
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def summary(description: str) -> str:
    """The first sentence of a description, on one line."""
    text = " ".join(description.split())
    return _SENTENCE_END.split(text, maxsplit=1)[0] if text else ""


def _wrap(text: str, indent: str = "") -> list[str]:
    text = " ".join(text.split())
    if not text:
        return []
    return textwrap.wrap(
        text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )


def _two_columns(items: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    if not items:
        return []
    width = min(max(len(name) for name, _ in items), 28)
    lines = []
    for name, text in items:
        head = f"{indent}{name.ljust(width)}  "
        if len(name) > width:
            lines.append(f"{indent}{name}")
            head = " " * len(head)
        body = textwrap.wrap(text, max(WIDTH - len(head), 30), break_on_hyphens=False) or [""]
        lines.append((head + body[0]).rstrip())
        lines += [" " * len(head) + more for more in body[1:]]
    return lines


def namespaces_help(schema: Schema) -> str:
    """The list of namespaces, for ``vdsm-client --help``."""
    items = [(ns.name, summary(ns.description)) for ns in _sorted(schema.namespaces)]
    hint = (
        "Run 'vdsm-client NAMESPACE --help' for its verbs, "
        "'vdsm-client NAMESPACE VERB --help' for a verb's parameters."
    )
    lines = ["Namespaces:", *_two_columns(items), "", *_wrap(hint)]
    return "\n".join(lines)


def namespace_help(namespace: Namespace) -> str:
    """A namespace's verbs with one line each, for ``vdsm-client Host --help``."""
    usage = f"usage: vdsm-client [options] {namespace.name} VERB [name=value ...] [-f FILE]"
    lines = [usage, ""]
    lines += _wrap(
        f"{namespace.name}: {namespace.description}" if namespace.description else namespace.name
    )
    lines += ["", "Verbs:"]
    lines += _two_columns([(v.name, summary(v.description)) for v in _sorted(namespace.verbs)])
    lines += ["", f"Run 'vdsm-client {namespace.name} VERB --help' for a verb's parameters."]
    return "\n".join(lines)


def verb_help(schema: Schema, verb: Verb) -> str:
    """One verb: what it does, its parameters and what it returns."""
    words = " ".join(f"{p.name}=..." if p.required else f"[{p.name}=...]" for p in verb.params)
    usage = f"usage: vdsm-client [options] {verb.namespace} {verb.name}"
    if verb.params:
        usage += f" {words} [-f FILE]"
    lines = textwrap.wrap(usage, WIDTH, subsequent_indent=" " * 7) + [""]
    lines += _wrap(verb.description or "(no description)")
    if verb.added:
        lines += ["", f"Added in {verb.added}."]
    lines += ["", "Parameters:" if verb.params else "Parameters: none"]
    for p in verb.params:
        state = "required" if p.required else f"default {default_text(p.default)}"
        lines.append(f"  {p.name}: {expected_text(schema, p.type.spec)}; {state}")
        lines += _wrap(p.description, " " * 6)
        lines += _fields(schema, p.type.spec, " " * 6)
    lines.append("")
    if verb.returns is None:
        lines.append("Returns: nothing")
    else:
        lines += _returns(schema, verb.returns.spec, verb.returns.description)
    return "\n".join(lines)


def _returns(schema: Schema, spec: dict[str, Any], description: str) -> list[str]:
    head = f"Returns: {type_label(spec)}"
    lines = _wrap(f"{head} — {description}" if description else head)
    return lines + _fields(schema, spec, "    ")


def _fields(schema: Schema, spec: dict[str, Any], indent: str) -> list[str]:
    """One line per property when the type is an object (or a list of objects)."""
    resolved = schema.resolve(spec)
    if resolved.get("type") == "list":
        resolved = schema.resolve(resolved.get("items") or {})
    props = resolved.get("properties") if resolved.get("type") == "object" else None
    if not props:
        return []
    return _two_columns(
        [(name, _property_text(pspec or {})) for name, pspec in props.items()], indent
    )


def _property_text(spec: dict[str, Any]) -> str:
    text = type_label(spec)
    if spec.get("required"):
        text += ", required"
    elif "default" in spec:
        text += f", default {default_text(spec['default'])}"
    description = str(spec.get("description", "")).strip()
    return f"{text}: {' '.join(description.split())}" if description else text


def suggest(word: str, choices: list[str]) -> str:
    """`` (did you mean X?)`` when a close match exists, else an empty string."""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return f" (did you mean {lowered[word.lower()]}?)"
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _sorted(mapping: dict[str, Any]) -> list[Any]:
    return [mapping[key] for key in sorted(mapping)]
