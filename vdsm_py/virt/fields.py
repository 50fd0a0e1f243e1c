"""Reading one field of a client's plain parameters: type, range, format, wire path.

Owns the field readers :mod:`.spec` builds on. VDSM declares many numbers and booleans as
strings (``smp: "2"``) and ``vdsm-client`` sends every ``key=value`` as a string, so both
forms are accepted; anything else is an :class:`~vdsm_py.errors.InvalidParameter` (91)
naming the field by its wire path (``vmParams.devices[2].macAddr``), and a missing
required one a :class:`~vdsm_py.errors.MissingParameter` (11). No XML, no libvirt.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from vdsm_py.errors import invalid_parameter, missing_parameter

_CUSTOM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def field_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def get_str(
    params: Mapping[str, Any], key: str, path: str, default: str | None = None,
    *, required: bool = False, max_len: int = 4096,
) -> str | None:
    value = params.get(key)
    where = field_path(path, key)
    if value is None:
        if required:
            raise missing_parameter(where)
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid_parameter(where, f"expected a string, got {type(value).__name__}")
    value = str(value)
    if len(value) > max_len:
        raise invalid_parameter(where, f"longer than {max_len} characters")
    if _CONTROL.search(value):
        raise invalid_parameter(where, "contains control characters")
    return value


def get_int(
    params: Mapping[str, Any], key: str, path: str, default: int | None = None,
    *, lo: int | None = None, hi: int | None = None, required: bool = False,
) -> int | None:
    value = params.get(key)
    where = field_path(path, key)
    if value is None or value == "":
        if required:
            raise missing_parameter(where)
        return default
    if isinstance(value, bool):
        raise invalid_parameter(where, "expected an integer, got a boolean")
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,19}", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise invalid_parameter(where, f"expected an integer, got {value!r:.40}")
    if lo is not None and value < lo:
        raise invalid_parameter(where, f"must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise invalid_parameter(where, f"must be at most {hi}, got {value}")
    return value


def get_bool(params: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = params.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise invalid_parameter(field_path(path, key), f"expected true or false, got {value!r:.40}")


def get_choice(
    params: Mapping[str, Any], key: str, path: str, choices: Mapping[str, str] | tuple[str, ...],
    default: str | None,
) -> str | None:
    value = get_str(params, key, path)
    if value is None:
        return default
    table = choices if isinstance(choices, Mapping) else {c: c for c in choices}
    if value not in table:
        raise invalid_parameter(
            field_path(path, key), f"expected one of {sorted(table)}, got {value!r:.40}"
        )
    return table[value]


def get_custom(params: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    """A custom-properties map: identifier keys (they become hook environment variables)."""
    value = params.get(key)
    where = field_path(path, key)
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise invalid_parameter(where, "expected an object of string values")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _CUSTOM_KEY.fullmatch(k):
            raise invalid_parameter(f"{where}.{k}", "property names are letters, digits "
                                    "and '_', not starting with a digit")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise invalid_parameter(f"{where}.{k}", "expected a string value")
        text = str(v)
        if _CONTROL.search(text.replace("\n", "").replace("\t", "")):
            raise invalid_parameter(f"{where}.{k}", "contains control characters")
        out[k] = text
    return out


def require_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid_parameter(where, "expected an object")
    return value


def uuid_field(value: Any, where: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise invalid_parameter(where, f"not a UUID: {value!r:.40}") from None
