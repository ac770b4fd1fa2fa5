"""The schema mechanism every config shares (`inference_core.fields`): one declaration per field
gives its check, its default and the error a user sees."""

from dataclasses import FrozenInstanceError, dataclass

import pytest

from inference_core.errors import ConfigError
from inference_core.fields import (
    checked,
    integer,
    list_of,
    optional,
    read_schema,
    schema_of,
    string,
    to_plain,
)


@dataclass(frozen=True, kw_only=True)
class Inner:
    size: int = checked(integer(1), default=3)


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str = checked(string, hint="a name (e.g. se50)")
    tags: tuple[str, ...] = checked(list_of(string), default=("a",))
    note: str | None = checked(optional(string), default=None)
    inner: Inner = checked(schema_of(Inner), default=Inner)


def test_defaults_fill_what_is_absent_and_lists_become_tuples():
    outer = read_schema(Outer, {"name": "x", "tags": ["b", "c"]}, "")
    assert outer == Outer(name="x", tags=("b", "c"), note=None, inner=Inner(size=3))
    with pytest.raises(FrozenInstanceError):
        outer.name = "y"


def test_to_plain_round_trips():
    raw = {"name": "x", "tags": ["b"], "note": "n", "inner": {"size": 7}}
    outer = read_schema(Outer, raw, "")
    assert to_plain(outer) == raw
    assert read_schema(Outer, to_plain(outer), "") == outer


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "name: missing; add a name (e.g. se50)"),
    ({"name": "x", "tgas": []}, "tgas: unknown field; did you mean 'tags'?"),
    ({"name": "x", "inner": {"size": 0}}, "inner.size: must be >= 1, got 0"),
    ({"name": "x", "inner": []}, "inner: must be a mapping, got []"),
    ([], "config: must be a mapping, got []"),
])
def test_a_bad_field_is_named_in_one_line(raw, message):
    with pytest.raises(ConfigError) as error:
        read_schema(Outer, raw, "")
    assert str(error.value) == message


def test_where_prefixes_every_field_name():
    with pytest.raises(ConfigError, match=r"^models\[1\]\.name: missing"):
        read_schema(Outer, {}, "models[1]")
