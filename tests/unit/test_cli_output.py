"""vdsm-client's output: pretty JSON by default, readable tables, one JSON line per event."""

from __future__ import annotations

import json

import pytest

from vdsm_py.cli.output import format_event, format_result, format_table


def test_json_is_indented_with_sorted_keys_and_round_trips():
    value = {"b": 1, "a": {"z": [1, 2], "y": "é"}}
    text = format_result(value)
    assert text == (
        '{\n    "a": {\n        "y": "é",\n        "z": [\n            1,\n            2\n'
        '        ]\n    },\n    "b": 1\n}'
    )
    assert json.loads(text) == value


def test_list_of_objects_is_a_table_with_a_column_per_key():
    text = format_table(
        [
            {"vmId": "a1", "status": "Up", "memSize": 1024},
            {"vmId": "b2", "status": "Down", "tags": ["x", "y"]},
        ]
    )
    assert text.splitlines() == [
        "vmId  status  memSize  tags",
        "----  ------  -------  ----",
        "a1    Up      1024",
        "b2    Down             x, y",
    ]


def test_object_is_flattened_to_dotted_names():
    text = format_table(
        {
            "cpu": {"model": "Xeon", "cores": 4},
            "nics": [{"name": "eth0", "speed": 1000}],
            "flags": ["sse", "avx"],
            "load": 0.5,
            "up": True,
            "vendor": None,
            "empty": {},
        }
    )
    assert text.splitlines() == [
        "cpu.model      Xeon",
        "cpu.cores      4",
        "nics[0].name   eth0",
        "nics[0].speed  1000",
        "flags          sse, avx",
        "load           0.5",
        "up             true",
        "vendor         null",
        "empty          {}",
    ]


def test_nested_values_inside_rows_are_compact_json():
    text = format_table([{"id": 1, "disk": {"path": "/a"}}])
    assert text.splitlines()[-1] == '1   {"path":"/a"}'


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, "true"),
        ("plain text", "plain text"),
        (["a", 2, None], "a\n2\nnull"),
        ([], "(empty list)"),
        ({}, "(empty object)"),
        ([1, [2]], "[0]  1\n[1]  [2]"),
    ],
)
def test_table_handles_scalars_lists_and_empties(value, expected):
    assert format_result(value, "table") == expected


def test_newlines_in_cells_do_not_break_rows():
    assert format_table({"xml": "<a>\n</a>"}) == "xml  <a>\\n</a>"


def test_event_is_one_json_line():
    line = format_event("|virt|VM_status|u1", {"u1": {"status": "Up"}, "notify_time": 7})
    assert "\n" not in line
    assert json.loads(line) == {
        "method": "|virt|VM_status|u1",
        "params": {"u1": {"status": "Up"}, "notify_time": 7},
    }


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        format_result({}, "xml")
