"""The TOML writer of the files mlenv writes (mlenv.lock, pylock.toml): deterministic, and only their shapes.

Why not tomlkit, which wrote them before: it builds a round-trip document model whose items cost a quarter
of a second for a 70-package lock, a tenth of `mlenv lock` (issue 19). This writer gives the same bytes
tomlkit gave for these shapes (tests/test_tomlwrite.py holds it to tomlkit on generated documents), so no
existing lock changes. Shapes: scalars (str, int, bool, aware datetime), inline arrays (one line, or one
item per line), inline tables, tables, arrays of tables, comments and blank lines at the top level.

`table` and `inline` leave None values out, so optional fields simply do not appear; keys keep the order
given. In a table, the key/value lines come before its sub-tables, whatever order they were added in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# TOML basic strings must escape the C0 controls, DEL, the quote and the backslash; the short forms are
# TOML's own, the rest \uXXXX. Everything else (any other Unicode) is written as it is.
_ESCAPED = re.compile(r'[\x00-\x1f\x7f"\\]')
_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


@dataclass(frozen=True)
class Inline:
    """An inline table: `{name = "x", size = 1}`."""

    pairs: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Array:
    items: tuple[Any, ...]
    multiline: bool = False  # one item per line, each followed by a comma


@dataclass
class Table:
    entries: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, key: str, value: Any) -> None:
        self.entries.append((key, value))


@dataclass
class TableArray:
    """An array of tables: `[[python.packages]]` sections."""

    tables: list[Table] = field(default_factory=list)

    def append(self, table: Table) -> None:
        self.tables.append(table)


@dataclass(frozen=True)
class Comment:
    text: str


class _Blank:
    pass


BLANK_LINE = _Blank()


@dataclass
class Document:
    items: list[tuple[str, Any] | Comment | _Blank] = field(default_factory=list)

    def add(self, key: str, value: Any) -> None:
        self.items.append((key, value))

    def comment(self, text: str) -> None:
        self.items.append(Comment(text))

    def blank_line(self) -> None:
        self.items.append(BLANK_LINE)


def table(values: Mapping[str, Any]) -> Table:
    """A table of the non-None values, in the given key order."""
    return Table([(key, value) for key, value in values.items() if value is not None])


def inline(values: Mapping[str, Any]) -> Inline:
    """An inline table of the non-None values, in the given key order."""
    return Inline(tuple((key, value) for key, value in values.items() if value is not None))


def array(items: Iterable[Any], *, multiline: bool = False) -> Array:
    """An inline array; `multiline` puts each item on a line of its own (an empty one stays `[]`)."""
    return Array(tuple(items), multiline)


def dumps(document: Document) -> str:
    out: list[str] = []
    in_section = False
    for item in document.items:
        if isinstance(item, Comment):
            out.extend(f"# {line}\n" if line else "#\n" for line in item.text.split("\n"))
        elif isinstance(item, _Blank):
            out.append("\n")
        else:
            key, value = item
            if in_section and not _is_section(value):
                raise ValueError(
                    f"the top-level key {key!r} comes after a table and would be read as its own"
                )
            in_section = in_section or _is_section(value)
            _entry(out, (), key, value)
    return "".join(out)


def _entry(out: list[str], path: tuple[str, ...], key: str, value: Any) -> None:
    if _is_section(value):
        _section(out, (*path, key), value)
    else:
        out.append(f"{_key(key)} = {_value(value)}\n")


def _is_section(value: Any) -> bool:
    # An empty array of tables has no section to write: it is written as the empty array it is.
    return isinstance(value, Table) or (isinstance(value, TableArray) and bool(value.tables))


def _section(out: list[str], path: tuple[str, ...], value: Table | TableArray) -> None:
    dotted = ".".join(_key(part) for part in path)
    if isinstance(value, TableArray):
        for member in value.tables:
            _header(out, f"[[{dotted}]]")
            _body(out, path, member)
        return
    # A table holding only tables (`[apt]` over its two arrays of tables) needs no header of its own.
    if not value.entries or not all(_is_section(v) for _, v in value.entries):
        _header(out, f"[{dotted}]")
    _body(out, path, value)


def _header(out: list[str], header: str) -> None:
    """A section header, with one blank line before it unless it starts the file or follows one."""
    if out and out[-1] != "\n":
        out.append("\n")
    out.append(header + "\n")


def _body(out: list[str], path: tuple[str, ...], value: Table) -> None:
    for key, item in value.entries:
        if not _is_section(item):
            _entry(out, path, key, item)
    for key, item in value.entries:
        if _is_section(item):
            _section(out, (*path, key), item)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    return '"' + _ESCAPED.sub(lambda m: _SHORT.get(m[0]) or f"\\u{ord(m[0]):04x}", text) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"a datetime without a timezone cannot be written to a lock: {value}")
        text = value.isoformat()
        return text[: -len("+00:00")] + "Z" if value.utcoffset() == timedelta(0) else text
    if isinstance(value, Inline):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, TableArray):  # empty: see _is_section
        return "[]"
    if isinstance(value, Array | list | tuple):
        items = value.items if isinstance(value, Array) else tuple(value)
        if isinstance(value, Array) and value.multiline and items:
            return "[\n" + "".join(f"    {_value(item)},\n" for item in items) + "]"
        return "[" + ", ".join(_value(item) for item in items) + "]"
    raise TypeError(f"mlenv writes no TOML value of type {type(value).__name__}")
