"""The API schema: one YAML file per namespace under ``vdsm_py/api/schema/``.

The same description feeds parameter validation (here), the CLI's help and value typing
(``vdsm_py.cli.client``) and the generated reference (``vdsm_py.rpc.docs``). A schema file
looks like::

    namespace: Host
    description: The host itself.
    available_during_recovery: true      # else verbs answer 99 until recovery ends
    types:
      Status:                             # referenced as Status anywhere
        type: enum
        values: [Up, Down]
      Thing:
        type: object
        description: ...
        properties:
          name: {type: string, description: ...}
          size: {type: int, min: 0, required: false, default: 0}
    verbs:
      getThing:
        description: ...
        params:
          - {name: thingId, type: string, format: uuid, description: ...}
        return: {type: Thing, description: ...}

A namespace may be spread over several files (``host.yml`` and ``host_vms.yml`` both add
``Host`` verbs); only one of them should carry its description. Types are ``string`` (``format: uuid`` optional), ``int``, ``float``, ``boolean``, ``any``,
``list`` (``items: T``), ``map`` (string keys, ``values: T``), ``object`` (``properties``;
``additional: true`` lets unknown keys through), ``enum`` (``values``), or the name of a
declared type. Wire names stay as VDSM spells them; Python implementations receive the
parameters under snake_case names (``vmId`` → ``vm_id``).

Validation is compiled once into plain closures so that checking a call costs microseconds.
Errors: a missing required parameter is 11 (MissParam) and names it; a wrong type or value
is 91 (InvalidParameter) and says what was expected.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vdsm_py.errors import invalid_parameter, missing_parameter

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "api" / "schema"

PRIMITIVES = ("string", "int", "float", "boolean", "any")
SPEC_KEYS = frozenset(
    {
        "type", "description", "required", "default", "format", "min", "max", "pattern",
        "maxLength", "maxItems", "items", "values", "properties", "additional", "name",
        "added", "example",
    }
)
Checker = Callable[[Any, str], Any]

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``getAllVmStats`` → ``get_all_vm_stats``; ``vmId`` → ``vm_id``."""
    return _CAMEL.sub(r"_\1", name).lower()


class SchemaError(Exception):
    """The schema files themselves are wrong (a developer error, found at load time)."""


@dataclass(frozen=True)
class TypeRef:
    """A use of a type: its name or inline definition plus per-use constraints."""

    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("type", "any"))

    @property
    def description(self) -> str:
        return str(self.spec.get("description", "")).strip()


@dataclass(frozen=True)
class Param:
    name: str
    type: TypeRef
    description: str
    required: bool
    default: Any = None

    @property
    def py_name(self) -> str:
        return snake_case(self.name)


@dataclass(frozen=True)
class Verb:
    namespace: str
    name: str
    description: str
    params: tuple[Param, ...]
    returns: TypeRef | None
    available_during_recovery: bool
    added: str = ""

    @property
    def method(self) -> str:
        """The JSON-RPC method name, e.g. ``Host.getStats``."""
        return f"{self.namespace}.{self.name}"

    @property
    def py_name(self) -> str:
        return snake_case(self.name)


@dataclass(frozen=True)
class Namespace:
    name: str
    description: str
    verbs: dict[str, Verb]


@dataclass
class Schema:
    """All namespaces, verbs and named types, with compiled validators."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    _checkers: dict[str, Checker] = field(default_factory=dict, repr=False)
    _by_identity: dict[int, tuple[dict[str, Any], Checker]] = field(
        default_factory=dict, repr=False)
    # per verb: its parameter names and (name, Python name, checker, required, default)
    _plans: dict[str, tuple[frozenset[str], list[tuple[str, str, Checker, bool, Any]]]] = field(
        default_factory=dict, repr=False)

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR) -> Schema:
        files = sorted(directory.glob("*.yml"))
        if not files:
            raise SchemaError(f"no schema files in {directory}")
        return cls.from_documents(yaml.safe_load(p.read_text()) for p in files)

    @classmethod
    def from_documents(cls, docs: Iterable[dict[str, Any]]) -> Schema:
        schema = cls()
        docs = list(docs)
        for doc in docs:
            for tname, tspec in (doc.get("types") or {}).items():
                if tname in schema.types or tname in PRIMITIVES:
                    raise SchemaError(f"type {tname} declared twice")
                schema.types[tname] = tspec
        for doc in docs:
            schema._add_namespace(doc)
        schema._check_references()
        return schema

    def _add_namespace(self, doc: dict[str, Any]) -> None:
        ns = doc["namespace"]
        during_recovery = bool(doc.get("available_during_recovery", False))
        verbs: dict[str, Verb] = {}
        for vname, vspec in (doc.get("verbs") or {}).items():
            vspec = vspec or {}
            params = []
            for p in vspec.get("params") or []:
                has_default = "default" in p
                params.append(
                    Param(
                        name=p["name"],
                        type=TypeRef({k: v for k, v in p.items() if k not in ("name",)}),
                        description=str(p.get("description", "")).strip(),
                        required=bool(p.get("required", not has_default)),
                        default=p.get("default"),
                    )
                )
            verbs[vname] = Verb(
                namespace=ns,
                name=vname,
                description=str(vspec.get("description", "")).strip(),
                params=tuple(params),
                returns=TypeRef(vspec["return"]) if vspec.get("return") else None,
                available_during_recovery=bool(
                    vspec.get("available_during_recovery", during_recovery)
                ),
                added=str(vspec.get("added", "")),
            )
        existing = self.namespaces.get(ns)
        if existing is None:
            self.namespaces[ns] = Namespace(ns, str(doc.get("description", "")).strip(), verbs)
            return
        # A namespace may be spread over several files (Host verbs of virt, network...).
        for vname, verb in verbs.items():
            if vname in existing.verbs:
                raise SchemaError(f"verb {ns}.{vname} declared twice")
            existing.verbs[vname] = verb

    def _check_references(self) -> None:
        def walk(spec: dict[str, Any], where: str) -> None:
            unknown = set(spec) - SPEC_KEYS
            if unknown:
                # Typically a description with a comma in a YAML flow mapping
                # ({description: a, b}) that YAML split into a stray key: quote it.
                raise SchemaError(
                    f"{where}: unknown keys {sorted(map(str, unknown))} (quote descriptions "
                    "that contain commas or colons)"
                )
            t = spec.get("type", "any")
            if t in ("list",):
                walk(spec.get("items", {}), where)
            elif t == "map":
                walk(spec.get("values", {}), where)
            elif t == "object":
                for pname, pspec in (spec.get("properties") or {}).items():
                    walk(pspec, f"{where}.{pname}")
            elif t == "enum":
                if not spec.get("values"):
                    raise SchemaError(f"{where}: enum without values")
            elif t not in PRIMITIVES and t not in self.types:
                raise SchemaError(f"{where}: unknown type {t!r}")

        for tname, tspec in self.types.items():
            walk(tspec, tname)
        for verb in self.verbs():
            for p in verb.params:
                walk(p.type.spec, f"{verb.method}({p.name})")
            if verb.returns:
                walk(verb.returns.spec, f"{verb.method} return")

    # -- lookup -----------------------------------------------------------------------

    def verbs(self) -> Iterable[Verb]:
        for ns in self.namespaces.values():
            yield from ns.verbs.values()

    def verb(self, method: str) -> Verb | None:
        ns, _, name = method.partition(".")
        namespace = self.namespaces.get(ns)
        return namespace.verbs.get(name) if namespace else None

    def resolve(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Follow named types to the definition that has the structure."""
        seen = set()
        while spec.get("type") in self.types:
            name = spec["type"]
            if name in seen:
                raise SchemaError(f"type {name} refers to itself")
            seen.add(name)
            spec = {**self.types[name], **{k: v for k, v in spec.items() if k != "type"}}
        return spec

    # -- validation -------------------------------------------------------------------

    def validate_params(self, verb: Verb, params: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` of a call; return Python keyword arguments (snake_case).

        Raises MissingParameter (11) or InvalidParameter (91) naming the parameter.
        """
        plan = self._plans.get(verb.method)
        if plan is None:
            plan = (frozenset(p.name for p in verb.params),
                    [(p.name, p.py_name, self.checker(p.type.spec), p.required, p.default)
                     for p in verb.params])
            self._plans[verb.method] = plan
        known, checks = plan
        for key in params:
            if key not in known:
                raise invalid_parameter(key, f"unknown parameter of {verb.method}")
        kwargs: dict[str, Any] = {}
        for name, py_name, check, required, default in checks:
            if name in params:
                kwargs[py_name] = check(params[name], name)
            elif required:
                raise missing_parameter(name)
            else:
                kwargs[py_name] = default
        return kwargs

    def checker(self, spec: dict[str, Any]) -> Checker:
        key = repr(sorted(spec.items(), key=lambda kv: kv[0]))
        fn = self._checkers.get(key)
        if fn is None:
            fn = self._compile(spec)
            self._checkers[key] = fn
        return fn

    def _nested(self, spec: dict[str, Any]) -> Checker:
        """:meth:`checker`, looked up by the spec's identity (compiled checkers call this
        for every value they check; the entry keeps the spec alive, so its id stays its own).
        """
        found = self._by_identity.get(id(spec))
        if found is None:
            found = self._by_identity[id(spec)] = (spec, self.checker(spec))
        return found[1]

    def _compile(self, spec: dict[str, Any]) -> Checker:
        spec = self.resolve(spec)
        t = spec.get("type", "any")
        if t == "any":
            return lambda v, path: v
        if t == "string":
            return _string_checker(spec)
        if t in ("int", "float"):
            return _number_checker(t, spec)
        if t == "boolean":
            return _bool_checker
        if t == "enum":
            return _enum_checker(spec)
        if t == "list":
            return self._list_checker(spec)
        if t == "map":
            return self._map_checker(spec)
        if t == "object":
            return self._object_checker(spec)
        raise SchemaError(f"cannot compile type {t!r}")

    def _list_checker(self, spec: dict[str, Any]) -> Checker:
        items_spec = spec.get("items", {"type": "any"})
        max_items = spec.get("maxItems")

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, list):
                raise invalid_parameter(path, f"expected a list, got {_kind(value)}")
            if max_items is not None and len(value) > max_items:
                raise invalid_parameter(path, f"at most {max_items} items allowed")
            item = self._nested(items_spec)
            return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

        return check

    def _map_checker(self, spec: dict[str, Any]) -> Checker:
        values_spec = spec.get("values", {"type": "any"})

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, dict):
                raise invalid_parameter(path, f"expected an object, got {_kind(value)}")
            item = self._nested(values_spec)
            return {k: item(v, f"{path}.{k}") for k, v in value.items()}

        return check

    def _object_checker(self, spec: dict[str, Any]) -> Checker:
        props: dict[str, dict[str, Any]] = spec.get("properties") or {}
        additional = bool(spec.get("additional", False))

        def check(value: Any, path: str) -> Any:
            if not isinstance(value, dict):
                raise invalid_parameter(path, f"expected an object, got {_kind(value)}")
            out: dict[str, Any] = {}
            for key, v in value.items():
                pspec = props.get(key)
                if pspec is None:
                    if not additional:
                        raise invalid_parameter(f"{path}.{key}", "unknown field")
                    out[key] = v
                else:
                    out[key] = self._nested(pspec)(v, f"{path}.{key}")
            for key, pspec in props.items():
                if key in out:
                    continue
                if "default" in pspec:
                    out[key] = pspec["default"]
                elif pspec.get("required", False):
                    raise missing_parameter(f"{path}.{key}")
            return out

        return check


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _string_checker(spec: dict[str, Any]) -> Checker:
    fmt = spec.get("format")
    max_len = spec.get("maxLength")
    pattern = re.compile(spec["pattern"]) if "pattern" in spec else None

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise invalid_parameter(path, f"expected a string, got {_kind(value)}")
        if max_len is not None and len(value) > max_len:
            raise invalid_parameter(path, f"longer than {max_len} characters")
        if fmt == "uuid":
            try:
                uuid.UUID(value)
            except ValueError:
                raise invalid_parameter(path, f"not a UUID: {value[:40]!r}") from None
        if pattern is not None and not pattern.fullmatch(value):
            raise invalid_parameter(path, f"does not match {pattern.pattern}")
        return value

    return check


def _number_checker(t: str, spec: dict[str, Any]) -> Checker:
    lo = spec.get("min")
    hi = spec.get("max")
    want = "an integer" if t == "int" else "a number"

    def check(value: Any, path: str) -> Any:
        ok = isinstance(value, int) if t == "int" else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            raise invalid_parameter(path, f"expected {want}, got {_kind(value)}")
        if lo is not None and value < lo:
            raise invalid_parameter(path, f"must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            raise invalid_parameter(path, f"must be at most {hi}, got {value}")
        return value

    return check


def _bool_checker(value: Any, path: str) -> Any:
    if not isinstance(value, bool):
        raise invalid_parameter(path, f"expected a boolean, got {_kind(value)}")
    return value


def _enum_checker(spec: dict[str, Any]) -> Checker:
    allowed = list(spec["values"])

    def check(value: Any, path: str) -> Any:
        if value not in allowed:
            raise invalid_parameter(path, f"expected one of {allowed}, got {value!r}")
        return value

    return check
