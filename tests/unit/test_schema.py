import pytest

from vdsm_py.errors import InvalidParameter, MissingParameter
from vdsm_py.rpc.schema import Schema, SchemaError, snake_case

DOC = {
    "namespace": "Thing",
    "types": {
        "Color": {"type": "enum", "values": ["red", "green"]},
        "Spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "required": True},
                "size": {"type": "int", "min": 1, "max": 10, "default": 2},
                "color": {"type": "Color"},
                "tags": {"type": "list", "items": {"type": "string"}},
                "labels": {"type": "map", "values": {"type": "int"}},
            },
        },
    },
    "verbs": {
        "create": {
            "params": [
                {"name": "thingId", "type": "string", "format": "uuid"},
                {"name": "spec", "type": "Spec"},
                {"name": "force", "type": "boolean", "default": False},
                {"name": "ratio", "type": "float", "required": False},
            ],
            "return": {"type": "Spec"},
        }
    },
}
UUID = "8b8f6b2c-4d46-4b0e-9c4a-6f0e3a7c2d11"


@pytest.fixture(scope="module")
def schema():
    return Schema.from_documents([DOC])


def check(schema, params):
    return schema.validate_params(schema.verb("Thing.create"), params)


def test_valid_call_gives_snake_case_kwargs_with_defaults(schema):
    kwargs = check(schema, {"thingId": UUID, "spec": {"name": "a", "color": "red"}})
    assert kwargs == {
        "thing_id": UUID,
        "spec": {"name": "a", "color": "red", "size": 2},
        "force": False,
        "ratio": None,
    }


@pytest.mark.parametrize(
    "params, error, text",
    [
        ({"spec": {"name": "a"}}, MissingParameter, "thingId"),
        ({"thingId": UUID, "spec": {}}, MissingParameter, "spec.name"),
        ({"thingId": "nope", "spec": {"name": "a"}}, InvalidParameter, "thingId: not a UUID"),
        ({"thingId": UUID, "spec": {"name": 5}}, InvalidParameter, "spec.name: expected a string, got an integer"),
        ({"thingId": UUID, "spec": {"name": "a", "size": "3"}}, InvalidParameter, "spec.size: expected an integer, got a string ('3')"),
        ({"thingId": UUID, "spec": {"name": "a", "size": 11}}, InvalidParameter, "spec.size: must be at most 10"),
        ({"thingId": UUID, "spec": {"name": "a", "size": True}}, InvalidParameter, "expected an integer, got a boolean"),
        ({"thingId": UUID, "spec": {"name": "a", "color": "blue"}}, InvalidParameter, "spec.color: expected one of"),
        ({"thingId": UUID, "spec": {"name": "a", "tags": ["x", 1]}}, InvalidParameter, "spec.tags[1]"),
        ({"thingId": UUID, "spec": {"name": "a", "labels": {"k": "v"}}}, InvalidParameter, "spec.labels.k"),
        ({"thingId": UUID, "spec": {"name": "a", "extra": 1}}, InvalidParameter, "spec.extra: unknown field"),
        ({"thingId": UUID, "spec": {"name": "a"}, "typo": 1}, InvalidParameter, "typo: unknown parameter of Thing.create"),
        ({"thingId": UUID, "spec": "x"}, InvalidParameter, "spec: expected an object"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(schema, params, error, text):
    with pytest.raises(error) as exc:
        check(schema, params)
    assert text in str(exc.value)


def test_float_accepts_integers(schema):
    assert check(schema, {"thingId": UUID, "spec": {"name": "a"}, "ratio": 1})["ratio"] == 1


def test_unknown_type_is_a_schema_error():
    doc = {"namespace": "X", "verbs": {"v": {"params": [{"name": "a", "type": "Nope"}]}}}
    with pytest.raises(SchemaError, match="unknown type 'Nope'"):
        Schema.from_documents([doc])


def test_a_namespace_may_span_files_but_not_repeat_verbs():
    a = {"namespace": "N", "verbs": {"one": {}}}
    b = {"namespace": "N", "verbs": {"two": {}}}
    schema = Schema.from_documents([a, b])
    assert sorted(schema.namespaces["N"].verbs) == ["one", "two"]
    with pytest.raises(SchemaError, match="declared twice"):
        Schema.from_documents([a, {"namespace": "N", "verbs": {"one": {}}}])


def test_project_schema_loads():
    schema = Schema.load()
    assert schema.verb("Host.ping2") is not None


@pytest.mark.parametrize(
    "name, expected",
    [("getAllVmStats", "get_all_vm_stats"), ("vmId", "vm_id"), ("ping2", "ping2"), ("vmID", "vm_id")],
)
def test_snake_case(name, expected):
    assert snake_case(name) == expected
