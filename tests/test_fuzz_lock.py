"""Hypothesis over the lock reader: a mutated valid lock is a Lock or one LockfileError line, never
another exception (issue 20). Bounded in examples and per-example time so the suite stays fast."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlenv import lockfile
from mlenv.errors import LockfileError

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "mlenv.lock"
DATA = tomllib.loads(GOLDEN.read_text(encoding="utf-8"))


def _paths(value: Any, where: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path of the golden lock, tables and arrays included."""
    out = [where] if where else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*where, index))
    return out


PATHS = _paths(DATA)
SCALARS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["\n", "\x00", "../..", "/", "http://127.0.0.1/x", "file:///etc/passwd", "$HOME", '"', "\\"]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True),
    st.datetimes(),
    st.dates(),
    st.times(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
MUTATION = st.tuples(
    st.sampled_from(PATHS), st.sampled_from(["set", "delete", "add"]), VALUES, st.text(max_size=8)
)


def _mutate(mutations: list[tuple[tuple[str | int, ...], str, Any, str]]) -> str:
    doc = tomlkit.parse(GOLDEN.read_text(encoding="utf-8"))
    for path, kind, value, key in mutations:
        node: Any = doc
        try:
            for part in path[:-1]:
                node = node[part]
            last = path[-1]
            if kind == "delete":
                del node[last]
            elif kind == "add" and isinstance(node, dict) and key:
                node[key] = value
            else:
                node[last] = value
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # an earlier mutation removed or retyped this path
    return tomlkit.dumps(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.lists(MUTATION, min_size=1, max_size=4))
# Found by this test: a table key holding a newline broke the error line in two.
@example([(("lock-version",), "set", {"\n": datetime.datetime(2000, 1, 1)}, "")])
def test_a_mutated_lock_is_a_lock_or_one_error_line(mutations: list[Any]) -> None:
    try:
        text = _mutate(mutations)
    except Exception:  # tomlkit cannot write this value (e.g. a NaN key): not a lock text to read
        return
    try:
        lockfile.loads(text, path="mlenv.lock")
    except LockfileError as error:
        assert str(error).startswith("mlenv.lock"), str(error)
        assert "\n" not in str(error)


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_a_lock_or_one_error_line(data: bytes) -> None:
    try:
        lockfile.loads(GOLDEN.read_bytes()[:300] + data, path="mlenv.lock")
    except LockfileError as error:
        assert str(error).startswith("mlenv.lock")
