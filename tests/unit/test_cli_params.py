"""vdsm-client's parameters: ``key=value`` words and ``-f`` files typed by the schema."""

from __future__ import annotations

import io
import json

import pytest

from vdsm_py.cli.params import (
    ParamError,
    build_params,
    parse_assignments,
    parse_untyped,
    read_params_file,
)
from vdsm_py.rpc.schema import Schema

UUID = "8b8f6b2c-4d46-4b0e-9c4a-6f0e3a7c2d11"

DOC = {
    "namespace": "VM",
    "types": {
        "VmStatus": {"type": "enum", "values": ["Up", "Down"]},
        "Priority": {"type": "enum", "values": [0, 50, 100]},
        "UUID": {"type": "string", "format": "uuid"},
        "Device": {
            "type": "object",
            "properties": {"path": {"type": "string", "required": True}},
        },
    },
    "verbs": {
        "create": {
            "params": [
                {"name": "vmId", "type": "UUID"},
                {"name": "memSize", "type": "int", "min": 1},
                {"name": "ratio", "type": "float", "default": 1.0},
                {"name": "start", "type": "boolean", "default": True},
                {"name": "status", "type": "VmStatus", "default": "Down"},
                {"name": "priority", "type": "Priority", "default": 50},
                {"name": "devices", "type": "list", "items": {"type": "Device"}, "default": []},
                {"name": "custom", "type": "map", "values": {"type": "string"}, "default": {}},
                {"name": "name", "type": "string", "default": ""},
                {"name": "extra", "type": "any", "required": False},
            ],
        },
    },
}


@pytest.fixture(scope="module")
def schema():
    return Schema.from_documents([DOC])


@pytest.fixture(scope="module")
def verb(schema):
    return schema.verb("VM.create")


def test_values_are_typed_by_the_schema(schema, verb):
    params = parse_assignments(
        schema,
        verb,
        [
            f"vmId={UUID}",
            "memSize=1024",
            "ratio=0.5",
            "start=false",
            "status=Up",
            "priority=100",
            'devices=[{"path": "/dev/sda"}]',
            'custom={"a": "b"}',
            "name=1024",
            'extra={"x": 1}',
        ],
    )
    assert params == {
        "vmId": UUID,
        "memSize": 1024,
        "ratio": 0.5,
        "start": False,
        "status": "Up",
        "priority": 100,
        "devices": [{"path": "/dev/sda"}],
        "custom": {"a": "b"},
        "name": "1024",
        "extra": {"x": 1},
    }
    assert type(params["memSize"]) is int


def test_string_values_keep_equals_signs_and_spaces(schema, verb):
    assert parse_assignments(schema, verb, ["name=a=b c"]) == {"name": "a=b c"}


def test_any_value_that_is_not_json_stays_a_string(schema, verb):
    assert parse_assignments(schema, verb, ["extra=hello"]) == {"extra": "hello"}


def test_booleans_accept_true_and_false_in_any_case(schema, verb):
    assert parse_assignments(schema, verb, ["start=TRUE"]) == {"start": True}


@pytest.mark.parametrize(
    "word, expected",
    [
        ("memSize=big", "parameter memSize: expected int (min 1), got 'big'"),
        ("memSize=1.5", "parameter memSize: expected int (min 1), got '1.5'"),
        ("ratio=x", "parameter ratio: expected float, got 'x'"),
        ("start=yes", "parameter start: expected true or false, got 'yes'"),
        ("status=Paused", "parameter status: expected VmStatus: one of Up, Down, got"),
        ("priority=7", "parameter priority: expected Priority: one of 0, 50, 100"),
        ("devices={", "got '{' (not JSON"),
        ('devices={"path": "x"}', "parameter devices: expected list of Device as a JSON list"),
        ("custom=[]", "parameter custom: expected map of string to string as a JSON object"),
    ],
)
def test_unparsable_values_name_the_parameter_and_expected_type(schema, verb, word, expected):
    with pytest.raises(ParamError) as info:
        parse_assignments(schema, verb, [word])
    assert expected in str(info.value)


def test_unknown_parameter_is_refused_listing_the_known_ones(schema, verb):
    with pytest.raises(
        ParamError,
        match=r"VM.create has no parameter 'memsize' "
        r"\(its parameters: vmId, memSize, ratio",
    ):
        parse_assignments(schema, verb, ["memsize=1"])


@pytest.mark.parametrize("word", ["memSize", "=5"])
def test_words_without_name_and_value_are_refused(schema, verb, word):
    with pytest.raises(ParamError, match="expected name=value"):
        parse_assignments(schema, verb, [word])


def test_same_parameter_twice_is_refused(schema, verb):
    with pytest.raises(ParamError, match="memSize given twice"):
        parse_assignments(schema, verb, ["memSize=1", "memSize=2"])


def test_build_params_validates_like_the_daemon(schema, verb):
    with pytest.raises(ParamError, match="Missing required parameter: vmId"):
        build_params(schema, verb, ["memSize=1"])
    with pytest.raises(
        ParamError,
        match=r"Invalid parameter: vmId: not a UUID: 'abc' "
        r"\(expected UUID: string \(uuid\)\)",
    ):
        build_params(schema, verb, ["vmId=abc", "memSize=1"])
    with pytest.raises(ParamError, match="Invalid parameter: memSize: must be at least 1"):
        build_params(schema, verb, [f"vmId={UUID}", "memSize=0"])
    with pytest.raises(ParamError, match=r"Missing required parameter: devices\[0\].path"):
        build_params(schema, verb, [f"vmId={UUID}", "memSize=1", "devices=[{}]"])


def test_build_params_sends_only_what_was_given(schema, verb):
    assert build_params(schema, verb, [f"vmId={UUID}", "memSize=2"]) == {
        "vmId": UUID,
        "memSize": 2,
    }


def test_file_params_are_typed_json_and_words_override_them(schema, verb, tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"vmId": UUID, "memSize": 512, "start": False}))
    file_params = read_params_file(str(path))
    assert build_params(schema, verb, ["memSize=2048"], file_params) == {
        "vmId": UUID,
        "memSize": 2048,
        "start": False,
    }


def test_file_params_are_checked_by_the_schema(schema, verb):
    with pytest.raises(
        ParamError, match="Invalid parameter: memSize: expected an integer, got a string"
    ):
        build_params(schema, verb, [], {"vmId": UUID, "memSize": "512"})
    with pytest.raises(ParamError, match="VM.create has no parameter 'bogus'"):
        build_params(schema, verb, [], {"vmId": UUID, "memSize": 1, "bogus": 1})


def test_params_file_dash_reads_stdin():
    assert read_params_file("-", io.StringIO('{"memSize": 1}')) == {"memSize": 1}


def test_params_file_errors_are_clear(tmp_path):
    with pytest.raises(ParamError, match="cannot read parameters file .*missing.json"):
        read_params_file(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(ParamError, match=r"bad.json: not valid JSON: .*\(line 1, column"):
        read_params_file(str(bad))
    with pytest.raises(ParamError, match="expected a JSON object of parameters"):
        read_params_file("-", io.StringIO("[1, 2]"))


def test_unchecked_words_are_json_when_they_parse_else_strings():
    assert parse_untyped(["a=1", "b=true", "c=text", 'd={"x": [1]}', "e="]) == {
        "a": 1,
        "b": True,
        "c": "text",
        "d": {"x": [1]},
        "e": "",
    }
    with pytest.raises(ParamError, match="a given twice"):
        parse_untyped(["a=1", "a=2"])
