"""The lock's TOML writer gives the bytes tomlkit gave (so no existing lock changes when mlenv is upgraded),
and TOML that reads back as what was written, on generated documents of every shape the writer has: any
Unicode and control characters in keys and strings, nested inline tables, arrays on one line or many,
tables, tables that hold only tables, arrays of tables, comments and blank lines."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st
from tomlkit.items import Item

from mlenv.model import tomlwrite as toml

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
KEY = st.one_of(st.sampled_from(["name", "sha256", "a_b-C9", "", "a.b", "é"]), TEXT)
SCALAR = st.one_of(
    TEXT,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
)
INLINE_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(toml.array),
        st.dictionaries(KEY, inner, max_size=3).map(toml.inline),
    ),
    max_leaves=6,
)
VALUE = st.one_of(
    INLINE_VALUE,
    st.lists(INLINE_VALUE, max_size=3).map(lambda items: toml.array(items, multiline=True)),
)


def _table(depth: int, *, least: int = 0) -> st.SearchStrategy[toml.Table]:
    """A table of `least` key/value lines or more, then sub-tables: the shapes mlenv writes (every table
    of an array of tables starts with a key, as a package's `name`, and no table is empty)."""
    scalars = st.dictionaries(KEY, VALUE, min_size=max(least, 1 if depth == 0 else 0), max_size=3)
    if depth == 0:
        return scalars.map(lambda d: toml.Table(list(d.items())))
    sections = st.dictionaries(KEY, _section(depth - 1), max_size=2)

    def joined(parts: tuple[dict[str, Any], dict[str, Any]]) -> toml.Table:
        scalar, section = parts
        return toml.Table([*scalar.items(), *((k, v) for k, v in section.items() if k not in scalar)])

    return st.tuples(scalars, sections).map(joined).filter(lambda table: bool(table.entries))


def _section(depth: int) -> st.SearchStrategy[toml.Table | toml.TableArray]:
    return st.one_of(
        _table(depth),
        st.lists(_table(depth, least=1), min_size=1, max_size=2).map(lambda t: toml.TableArray(list(t))),
    )


@st.composite
def documents(draw: st.DrawFn) -> toml.Document:
    document = toml.Document()
    for line in draw(
        st.lists(
            st.text(st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n"), max_size=10),
            max_size=2,
        )
    ):
        document.comment(line)
    keys = draw(st.lists(KEY, unique=True, max_size=6))
    split = draw(st.integers(0, len(keys)))
    for key in keys[:split]:
        document.add(key, draw(VALUE))
    if draw(st.booleans()):
        document.blank_line()
    for key in keys[split:]:
        document.add(key, draw(_section(1)))
    return document


def as_tomlkit(document: toml.Document) -> tomlkit.TOMLDocument:
    """The same document built with tomlkit's items, as mlenv's writers built it before."""
    out = tomlkit.document()
    for item in document.items:
        if isinstance(item, toml.Comment):
            out.add(tomlkit.comment(item.text))
        elif item is toml.BLANK_LINE:
            out.add(tomlkit.nl())
        else:
            key, value = item  # type: ignore[misc]
            out.add(key, _item(value))
    return out


def _item(value: Any) -> Item | Any:
    if isinstance(value, toml.TableArray):
        tables = tomlkit.aot()
        for member in value.tables:
            tables.append(_item(member))
        return tables
    if isinstance(value, toml.Table):
        table = tomlkit.table()
        for key, item in value.entries:
            table.add(key, _item(item))
        return table
    if isinstance(value, toml.Inline):
        inline = tomlkit.inline_table()
        for key, item in value.pairs:
            inline.append(key, _item(item))
        return inline
    if isinstance(value, toml.Array):
        array = tomlkit.array()
        array.extend([_item(item) for item in value.items])
        if value.multiline and value.items:
            array.multiline(True)
        return array
    return value


def plain(value: Any) -> Any:
    """What tomllib reads back for a written value."""
    if isinstance(value, toml.TableArray):
        return [plain(member) for member in value.tables]
    if isinstance(value, toml.Table):
        return {key: plain(item) for key, item in value.entries}
    if isinstance(value, toml.Inline):
        return {key: plain(item) for key, item in value.pairs}
    if isinstance(value, toml.Array):
        return [plain(item) for item in value.items]
    return value


@settings(max_examples=150, deadline=None)  # tomlkit is slow to build: 150 documents take ~10 s
@given(documents())
def test_the_same_bytes_as_tomlkit(document: toml.Document) -> None:
    assert toml.dumps(document) == tomlkit.dumps(as_tomlkit(document))


@settings(max_examples=200, deadline=None)
@given(documents())
def test_reads_back_as_written(document: toml.Document) -> None:
    written = {key: plain(value) for key, value in (i for i in document.items if isinstance(i, tuple))}
    assert tomllib.loads(toml.dumps(document)) == written


def test_an_empty_array_of_tables_is_an_empty_array() -> None:
    # tomlkit moved an empty array of tables to the top of the file; here it stays where it was added.
    document = toml.Document()
    document.add("lock-version", "1.0")
    document.add("packages", toml.TableArray())
    assert toml.dumps(document) == 'lock-version = "1.0"\npackages = []\n'


@pytest.mark.parametrize("value", [1.5, datetime(2024, 7, 1), object()])
def test_values_a_lock_never_holds_are_refused(value: object) -> None:
    document = toml.Document()
    document.add("x", value)
    with pytest.raises((TypeError, ValueError)):
        toml.dumps(document)
