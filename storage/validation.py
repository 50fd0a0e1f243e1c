"""Checks of identifiers that become path components on shared storage.

Every UUID taken from a client goes through :func:`check_uuid` before any path is built
from it, so that ``../`` or ``/`` can never reach the file system. Must not touch files.
"""

from __future__ import annotations

import re

from vdsm_py.errors import invalid_parameter

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_uuid(name: str, value: object) -> str:
    """Return ``value`` if it is a canonical lower-case UUID, else raise InvalidParameter."""
    if not isinstance(value, str) or not _UUID.match(value):
        raise invalid_parameter(name, f"not a UUID: {value!r}")
    return value


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Accept ints and decimal strings (VDSM sends sizes as strings); refuse the rest."""
    if isinstance(value, bool):
        raise invalid_parameter(name, f"not an integer: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        raise invalid_parameter(name, f"not an integer: {value!r}")
    if number < minimum:
        raise invalid_parameter(name, f"must be >= {minimum}: {number}")
    return number
