"""The generated API reference: its content, its determinism and ``docs/api.md``'s freshness."""

from __future__ import annotations

import re
from pathlib import Path

from vdsm_py.cli import tool
from vdsm_py.rpc.docs import GENERATOR_COMMAND, render_markdown, type_label
from vdsm_py.rpc.schema import Schema

REPO = Path(__file__).resolve().parents[2]
API_MD = REPO / "docs" / "api.md"

DOCS = [
    {
        "namespace": "Thing",
        "description": "Things and\nwhat they do.",
        "types": {
            "Color": {"type": "enum", "values": ["red", "green"], "description": "A hue."},
            "ThingId": {"type": "string", "format": "uuid"},
            "Spec": {
                "type": "object",
                "description": "How to make a thing.",
                "properties": {
                    "name": {"type": "string", "required": True, "description": "a | b"},
                    "size": {"type": "int", "min": 1, "max": 10, "default": 2},
                    "color": {"type": "Color"},
                    "disk": {
                        "type": "object",
                        "properties": {"path": {"type": "string", "description": "Where."}},
                    },
                },
            },
        },
        "verbs": {
            "create": {
                "description": "Make a thing.",
                "added": "4.5",
                "params": [
                    {"name": "thingId", "type": "ThingId", "description": "Its id."},
                    {"name": "spec", "type": "Spec"},
                    {
                        "name": "force",
                        "type": "boolean",
                        "default": False,
                        "description": "Replace an existing one.",
                    },
                    {"name": "opts", "type": "object", "properties": {"fast": {"type": "boolean"}}},
                ],
                "return": {
                    "type": "list",
                    "items": {"type": "Spec"},
                    "description": "What was made.",
                },
            },
            "list": {
                "params": [],
                "return": {
                    "type": "map",
                    "values": {
                        "type": "object",
                        "properties": {"status": {"type": "Color", "description": "Its colour."}},
                    },
                },
            },
        },
    },
    {
        "namespace": "Admin",
        "available_during_recovery": False,
        "verbs": {"reset": {"description": "Start over."}},
    },
]


def render(docs=DOCS) -> str:
    return render_markdown(Schema.from_documents(docs))


def test_docs_api_md_matches_the_schema():
    expected = render_markdown(Schema.load())
    current = API_MD.read_text(encoding="utf-8") if API_MD.exists() else ""
    assert current == expected, (
        f"docs/api.md is stale: the API schema (vdsm_py/api/schema/*.yml) changed. "
        f"Regenerate it with `.venv/bin/{GENERATOR_COMMAND}` "
        f"(or `.venv/bin/python -m vdsm_py.cli.tool api-docs -o docs/api.md`) and commit it."
    )


def test_verb_section_has_description_added_params_and_return():
    md = render()
    section = md.split("### Thing.create", 1)[1].split("### ", 1)[0]
    assert "Make a thing." in section
    assert "Added in 4.5." in section
    assert "| `thingId` | [ThingId](#thingid) | yes | Its id. |" in section
    assert "| `force` | boolean | no, default `false` | Replace an existing one. |" in section
    assert "| `opts.fast` | boolean | no |" in section
    assert "Returns: list of [Spec](#spec) — What was made." in section


def test_inline_object_in_return_value_gets_a_field_table():
    section = render().split("### Thing.list", 1)[1]
    assert "Returns: map of string to object" in section
    assert "| `*.status` | [Color](#color) | no | Its colour. |" in section


def test_types_are_documented_with_properties_enum_values_and_aliases():
    types = render().split("## Types", 1)[1]
    spec = types.split("### Spec", 1)[1].split("### ", 1)[0]
    assert "How to make a thing." in spec
    assert "| `name` | string | yes | a \\| b |" in spec
    assert "| `size` | int (min 1, max 10) | no, default `2` |" in spec
    assert "| `disk.path` | string | no | Where. |" in spec
    color = types.split("### Color", 1)[1].split("### ", 1)[0]
    assert "- `red`" in color and "- `green`" in color
    assert "Same as string (uuid)." in types.split("### ThingId", 1)[1]


def test_namespaces_verbs_and_types_come_in_name_order():
    md = render()
    assert md.index("## Admin") < md.index("## Thing") < md.index("## Types")
    assert md.index("### Thing.create") < md.index("### Thing.list")
    types = md.split("## Types", 1)[1]
    assert types.index("### Color") < types.index("### Spec") < types.index("### ThingId")
    assert "Answers 99 (RecoveryInProgress)" in md.split("### Admin.reset", 1)[1]


def test_output_does_not_depend_on_file_order():
    assert render(DOCS) == render(list(reversed(DOCS)))


def test_type_label_spells_containers_and_constraints():
    assert type_label({"type": "list", "items": {"type": "int", "min": 0}}) == "list of int (min 0)"
    assert type_label({"type": "enum", "values": ["a", "b"]}) == "one of a, b"
    assert (
        type_label({"type": "map", "values": {"type": "Spec"}}, lambda n: f"<{n}>")
        == "map of string to <Spec>"
    )


def test_tool_check_exits_1_when_stale_and_0_when_fresh(tmp_path, capsys):
    out = tmp_path / "api.md"
    assert tool.main(["api-docs", "-o", str(out)]) == 0
    assert out.read_text() == render_markdown(Schema.load())
    assert tool.main(["api-docs", "-o", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert tool.main(["api-docs", "-o", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert tool.main(["api-docs", "-o", str(tmp_path / "missing.md"), "--check"]) == 1


def test_every_link_in_the_generated_reference_lands_on_a_heading():
    from vdsm_py.rpc.docs import _anchor

    text = API_MD.read_text()
    headings = {_anchor(line.lstrip("#").strip()) for line in text.splitlines()
                if line.startswith("#")}
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets and targets <= headings, sorted(targets - headings)[:5]
