"""Checking values that come from files (a dataset's spec, a checkpoint, a config) by type.

A file may hold anything, so each field is checked against the type its dataclass declares
before any code uses it, and a wrong one is named with the file and the field.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any

from pixelreg.errors import PixelregError

BASE_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "str": str,
    "dict[str, Any]": dict,
}


def describe(value: Any) -> str:
    """A short, safe rendering of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_value(value: Any, declared: str, where: str, options: tuple[str, ...] = ()) -> Any:
    """`value` if it has the declared type ("int", "float | None", ...), floats as float; an
    error names `where`, and `options`, the parameters it is about."""
    kinds = [part.strip() for part in declared.split("|")]
    if value is None and "None" in kinds:
        return None
    for option in kinds:
        kind = BASE_TYPES.get(option)
        if kind is None or isinstance(value, bool) and option != "bool":
            continue  # True is an int to Python, never to us
        if isinstance(value, kind):
            if option == "float":
                value = float(value)  # type: ignore[arg-type]  # an int or a float, checked above
                if math.isnan(value):
                    raise PixelregError(f"{where} is NaN", options)
            return value
    articles = {"None": "null", "dict[str, Any]": "an object", "int": "an integer", "float": "a number"}
    wanted = " or ".join(articles.get(o, f"a {o}") for o in kinds)
    raise PixelregError(f"{where} must be {wanted}, got {describe(value)}", options)


def fields_from(cls: type, data: Any, where: str) -> dict[str, Any]:
    """The keyword arguments of dataclass `cls` from an untrusted mapping, each type-checked.

    Missing fields take their defaults; unknown ones are refused.
    """
    if not isinstance(data, dict):
        raise PixelregError(f"{where} must be an object of named fields, got {describe(data)}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise PixelregError(f"{where} has unknown fields {unknown}; was it made by a newer pixelreg?")
    values = {}
    for name, value in data.items():
        declared = known[name].type
        values[name] = check_value(value, str(declared), f"{where}: field {name!r}")
    missing = [
        f.name
        for f in known.values()
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise PixelregError(f"{where} lacks the fields {missing}")
    return values
