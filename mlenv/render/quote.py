"""The one way a value from the lock enters a Dockerfile line or a shell step.

Values reach four places, each with its own quoting:
- "shell": a word of a RUN step (POSIX sh): single-quoted unless it is plainly one word;
- "word": the value of ENV or LABEL, which the Dockerfile parser unquotes and expands `$VAR` in: a
  double-quoted word with `\\`, `"` and `$` escaped, the only characters its escape rule honours;
- "json": a string of an exec-form array (CMD, ENTRYPOINT, VOLUME, HEALTHCHECK CMD), parsed as JSON;
- "line": the rest of a line taken verbatim (the shell form of HEALTHCHECK): nothing is quoted, so a
  trailing backslash, which would join the next instruction, is refused.
No quoting survives a newline (it ends the instruction) or another control character, so those are
refused everywhere: the lock reader refuses them first; this is the last line of defence.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Literal

from mlenv.errors import BuildError

QuoteInto = Literal["shell", "word", "json", "line"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WORD_ESCAPES = re.compile(r'([\\"$])')


def quote(value: str, *, into: QuoteInto) -> str:
    """`value` as one token of a Dockerfile line or shell step of kind `into`."""
    if _CONTROL.search(value):
        raise BuildError(f"refusing to render {value!r}: it contains a control character")
    if into == "shell":
        return shlex.quote(value)
    if into == "word":
        return '"' + _WORD_ESCAPES.sub(r"\\\1", value) + '"'
    if into == "json":
        return json.dumps(value, ensure_ascii=False)
    if value.rstrip().endswith("\\"):
        raise BuildError(f"refusing to render {value!r}: a trailing backslash continues the Dockerfile line")
    return value


def quote_argv(values: tuple[str, ...] | list[str]) -> str:
    """An exec-form array: `["a", "b"]`."""
    return "[" + ", ".join(quote(v, into="json") for v in values) + "]"
