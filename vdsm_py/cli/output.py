"""How ``vdsm-client`` shows results and events: pretty JSON, a readable table, JSON lines.

- JSON (the default): indented, keys sorted, so output is stable and diffable.
- Table: a list of objects becomes one row per object with a column per key; an object
  becomes name/value rows with nested keys flattened to dotted paths (``cpu.model``,
  ``disks[0].path``); a list of plain values one value per line. Keys keep the order the
  daemon sent them in, which groups related fields.
- Events: one compact JSON object per line (``{"method": ..., "params": ...}``), so the
  stream can be piped into ``jq`` or read line by line.

Must not: do I/O; every function returns text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

FORMATS = ("json", "table")


def format_result(value: Any, fmt: str = "json") -> str:
    """The text to print for a call's result (no trailing newline)."""
    if fmt == "table":
        return format_table(value)
    if fmt == "json":
        return format_json(value)
    raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")


def format_json(value: Any) -> str:
    return json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False)


def format_event(method: str, params: Any) -> str:
    """One event as one line of JSON."""
    return json.dumps(
        {"method": method, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )


def format_table(value: Any) -> str:
    if isinstance(value, list):
        if not value:
            return "(empty list)"
        if all(isinstance(item, dict) for item in value):
            return _rows_table(value)
        if not any(isinstance(item, (dict, list)) for item in value):
            return "\n".join(_scalar(item) for item in value)
        return _grid([[f"[{i}]", _compact(item)] for i, item in enumerate(value)])
    if isinstance(value, dict):
        if not value:
            return "(empty object)"
        return _grid([[path, text] for path, text in _flatten(value, "")])
    return _scalar(value)


def _rows_table(items: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for item in items for key in item))
    rows = [list(columns)]
    rows += [[_cell(item[key]) if key in item else "" for key in columns] for item in items]
    text = _grid(rows)
    header, _, body = text.partition("\n")
    rule = "  ".join("-" * w for w in _widths(rows))
    return f"{header}\n{rule}\n{body}" if body else f"{header}\n{rule}"


def _flatten(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value:
        for key in value:
            yield from _flatten(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, _cell(value)


def _cell(value: Any) -> str:
    """A value inside a table cell: plain text for scalars, joined or JSON for the rest."""
    if isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value):
        return ", ".join(_scalar(v) for v in value) if value else "[]"
    if isinstance(value, (dict, list)):
        return _compact(value)
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value.replace("\r", "\\r").replace("\n", "\\n")
    return json.dumps(value)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _widths(rows: list[list[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def _grid(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, with no trailing blanks."""
    widths = _widths(rows)
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
