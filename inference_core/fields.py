"""Field checks shared by every schema (the ensemble config, a checkpoint's model config, the host
config): each takes `(value, where)` and returns the checked value, or raises ConfigError whose
message starts with `where`, e.g. `models[2].weight: must be >= 0, got -0.1`.

A schema is a frozen, keyword-only dataclass whose fields are declared with `checked(check,
default=...)`: the field's type, check, default and hint live in that one line. `read_schema`
reads a mapping into it (unknown keys refused with the closest name, required ones named with
what to add) and `to_plain` gives back plain JSON/YAML types.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any, TypeVar

from .errors import ConfigError


def fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}")


def string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(where, f"must be a non-empty string, got {shown(value)}")
    if "\0" in value:  # no file name, column or label holds one; paths would raise on it
        raise fail(where, f"must not contain a NUL character, got {shown(value)}")
    return value


def identifier(value: Any, where: str) -> str:
    """A Python name, such as a keyword argument's."""
    if not isinstance(value, str) or not value.isidentifier():
        raise fail(where, f"must be a Python name (e.g. n_classes), got {shown(value)}")
    return value


def choice(*allowed: str) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if value not in allowed:
            raise fail(where, f"must be one of {', '.join(allowed)}, got {shown(value)}")
        return value

    return check


def number(minimum: float | None = None, exclusive: bool = False) -> Callable[[Any, str], float]:
    def check(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(where, f"must be a number, got {shown(value)}")
        try:
            parsed = float(value)
        except OverflowError:  # an integer beyond any float
            parsed = math.inf
        if not math.isfinite(parsed):  # YAML's .nan and .inf, 1e999
            raise fail(where, f"must be a finite number, got {shown(value)}")
        if minimum is not None and (parsed <= minimum if exclusive else parsed < minimum):
            sign = ">" if exclusive else ">="
            raise fail(where, f"must be {sign} {minimum:g}, got {shown(value)}")
        return parsed

    return check


def integer(minimum: int, maximum: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(where, f"must be an integer, got {shown(value)}")
        if value < minimum:
            raise fail(where, f"must be >= {minimum}, got {shown(value)}")
        if maximum is not None and value > maximum:
            raise fail(where, f"must be <= {maximum}, got {shown(value)}")
        return value

    return check


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 3, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def shown(value: Any) -> str:
    """A value as an error message shows it: repr, cut short (a hostile config can hold a huge
    one)."""
    if isinstance(value, int) and abs(value) >= 10 ** 60:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = _SHORT_REPR.repr(value)  # bounded work, even for YAML aliases nested 9 deep
    except (ValueError, RecursionError):  # a huge integer inside
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= 80 else f"{text[:77]}..."


def inside_pattern(value: Any, where: str) -> str:
    """A glob pattern that stays inside the folder it is matched in (pathlib refuses absolute
    patterns with an exception, and `..` would read the files beside the test set)."""
    pattern = string(value, where)
    parts = pattern.replace("\\", "/").split("/")
    if pattern.startswith(("/", "\\")) or ".." in parts:
        raise fail(where, f"must be a pattern inside the test folder (e.g. *.png or **/*.jpg), "
                           f"got {shown(value)}")
    return pattern


def output_file(value: Any, where: str) -> str:
    """A file name in the working folder (the kernel's published output): no folder parts, so a
    config cannot write anywhere else."""
    name = string(value, where)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise fail(where, f"must be a file name in the working folder (e.g. submission.csv), "
                           f"got {shown(value)}")
    return name


def auto_or(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, where: value if value == "auto" else check(value, where)


def optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, where: None if value is None else check(value, where)


Check = Callable[[Any, str], Any]


def list_of(check: Check, non_empty: bool = True) -> Check:
    def check_list(value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise fail(where, f"must be a list, got {shown(value)}")
        if non_empty and not value:
            raise fail(where, "must not be empty")
        return [check(item, f"{where}[{i}]") for i, item in enumerate(value)]

    return check_list


def label(value: Any, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise fail(where, f"must be a string or an integer, got {shown(value)}")
    return value


def unique_labels(value: Any, where: str) -> list[str | int]:
    """A non-empty list of class labels, each given once (one output, one label)."""
    labels = list_of(label)(list(value) if isinstance(value, tuple) else value, where)
    first: dict[str | int, int] = {}
    for j, item in enumerate(labels):
        if item in first:
            raise fail(where, f"labels must be unique; {shown(item)} is listed at [{first[item]}] "
                              f"and [{j}]")
        first[item] = j
    return labels


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise fail(where, f"must be true or false, got {shown(value)}")
    return value


def sha256(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise fail(where, f"must be 64 lower-case hex digits, got {shown(value)}")
    return value


def fraction(value: Any, where: str) -> float:
    checked = number(0.0)(value, where)
    if checked >= 1.0:
        raise fail(where, f"must be at least 0 and below 1, got {shown(value)}")
    return checked


def probability(value: Any, where: str) -> float:
    checked = number(0.0)(value, where)
    if checked > 1.0:
        raise fail(where, f"must be between 0 and 1, got {shown(value)}")
    return checked


Schema = TypeVar("Schema")


def checked(check: Check, *, default: Any = MISSING, hint: str = "") -> Any:
    """A schema field read by `check`. Without a default it is required (`hint` is what the
    error tells the user to add); a schema class as default means that section with all its
    defaults."""
    metadata = {"check": check, "hint": hint}
    if default is MISSING:
        return field(metadata=metadata)
    if isinstance(default, type):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def schema_of(schema: type[Schema]) -> Check:
    """The check of a nested section: `read_schema` of its own schema."""
    return lambda value, where: read_schema(schema, value, where)


def _frozen(value: Any) -> Any:
    """Lists as tuples, so that a frozen schema holds nothing mutable but plain mappings."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def _schema_fields(schema: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(schema) if "check" in f.metadata]


def read_schema(schema: type[Schema], value: Any, where: str) -> Schema:
    """Read mapping `value` into `schema`, checking each field; ConfigError names the first bad
    field under `where` (`""` for a whole config)."""
    if not isinstance(value, dict):
        raise fail(where or "config", f"must be a mapping, got {shown(value)}")
    prefix = f"{where}." if where else ""
    fields = _schema_fields(schema)
    names = [f.name for f in fields]
    for key in value:
        if key not in names:
            name = key if isinstance(key, str) and key.isprintable() and len(key) <= 80 \
                else shown(key)
            close = difflib.get_close_matches(name, names, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"allowed fields: {', '.join(names)}"
            raise fail(f"{prefix}{name}", f"unknown field; {fix}")
    values = {}
    for spec in fields:
        if spec.name in value:
            values[spec.name] = _frozen(spec.metadata["check"](value[spec.name],
                                                               f"{prefix}{spec.name}"))
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise fail(f"{prefix}{spec.name}", f"missing; add {spec.metadata['hint']}")
    return schema(**values)


def to_plain(value: Any) -> Any:
    """A schema (or anything inside one) as plain types: mappings, lists, str, numbers, None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {spec.name: to_plain(getattr(value, spec.name)) for spec in _schema_fields(
            type(value))}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    return value
