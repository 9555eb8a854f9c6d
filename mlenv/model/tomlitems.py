"""Small builders of tomlkit items, shared by the writers of TOML files (mlenv.lock, pylock.toml).

None values are left out, so optional fields simply do not appear; keys keep the order given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomlkit
from tomlkit.items import Array, InlineTable, Table


def toml_table(values: Mapping[str, Any]) -> Table:
    """A table of the non-None values, in the given key order."""
    table = tomlkit.table()
    for key, value in values.items():
        if value is not None:
            table.add(key, value)
    return table


def toml_inline(values: Mapping[str, Any]) -> InlineTable:
    """An inline table of the non-None values, in the given key order."""
    table = tomlkit.inline_table()
    for key, value in values.items():
        if value is not None:
            table.append(key, value)
    return table


def toml_array(items: list[Any], *, multiline: bool = False) -> Array:
    array = tomlkit.array()
    array.extend(items)
    if multiline and items:
        array.multiline(True)
    return array
