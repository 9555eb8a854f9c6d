"""How much of an image the observer is willing to read: every bound on hostile input, with its reason.

An image is input from whoever pushed it. Each limit below is far above what real images need (the
reason says what real images do) and low enough that the pass stays within memory and time. Crossing
one is a LimitError, a StreamError the loaders turn into one ImageError line naming the image; the
tar reader adds the member, the layer reader the layer.
"""

from __future__ import annotations

import json
from typing import Any

from mlenv.observe.stream.decompress import StreamError

# A single file: CUDA libraries reach 1-2 GiB and baked models tens of GiB; a bigger member is hostile.
MAX_MEMBER_SIZE = 64 << 30
# One layer, uncompressed: the largest real ML layers are tens of GiB.
MAX_LAYER_BYTES = 128 << 30
# Decompressed bytes per compressed byte, checked once this much came out: real layers inflate 2-10x,
# zero-filled files ~1000x (gzip's limit); bombs are refused after at most this much output, not at the end.
MAX_RATIO = 100
RATIO_GRACE = 1 << 30
# Entries in one layer: a CUDA + torch layer has ~100k; each costs ~0.35 KiB in memory (measured: 300k
# entries, 150 MiB peak), so this keeps one layer's index near the memory bound.
MAX_ENTRIES = 500_000
# Path length and depth: PATH_MAX is 4096; real trees are < 30 deep. Bounds the work per path.
MAX_PATH_LENGTH = 4096
MAX_PATH_DEPTH = 256
# Header data (GNU long names, pax records) is held in memory whole: a path or a few xattrs.
MAX_HEADER_DATA = 1 << 20
# A file whose content the probes keep in memory (libpython is ~25 MiB, RECORDs a few MiB).
MAX_KEPT_FILE = 64 << 20
# A line of a parsed text file (os-release, dpkg status, pyvenv.cfg, METADATA, RECORD): real ones are
# under a few KiB; parsers never see a longer one.
MAX_LINE_LENGTH = 64 << 10
# JSON documents of an image (manifests, index, config) and how deeply they nest: a config with a long
# history is ~1 MiB and 5 levels deep.
MAX_JSON_SIZE = 16 << 20
MAX_JSON_DEPTH = 64
# All JSON members of a save archive together (kept until the manifest, written last, says which count).
MAX_JSON_TOTAL = 64 << 20


class LimitError(StreamError):
    """An image exceeds one of the limits above."""


class Budget:
    """A running total of bytes kept in memory, refused past `limit`."""

    def __init__(self, limit: int, what: str) -> None:
        self._limit = limit
        self._what = what
        self._used = 0

    def charge(self, size: int, name: str) -> None:
        self._used += size
        if self._used > self._limit:
            raise LimitError(
                f"member {name[:200]!r}: the {self._what} add up to more than {size_text(self._limit)}"
            )


def size_text(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.0f} {unit}"
    return f"{size} bytes"


def check_member(name: str, size: int) -> None:
    """A tar member's declared size and path, before any of its data is read."""
    if size < 0:
        raise LimitError(f"member {name[:200]!r} declares a negative size ({size})")
    if size > MAX_MEMBER_SIZE:
        raise LimitError(
            f"member {name[:200]!r} declares {size_text(size)}, "
            f"over the limit of {size_text(MAX_MEMBER_SIZE)}"
        )
    if len(name) > MAX_PATH_LENGTH:
        raise LimitError(
            f"member {name[:200]!r}... has a path of {len(name)} characters (limit {MAX_PATH_LENGTH})"
        )
    if name.count("/") > MAX_PATH_DEPTH:
        raise LimitError(f"member {name[:200]!r}... is nested deeper than {MAX_PATH_DEPTH} directories")


def check_kept(name: str, size: int) -> None:
    """A file the probes will hold in memory."""
    if size > MAX_KEPT_FILE:
        raise LimitError(
            f"member {name[:200]!r} is {size_text(size)}; a file the probes read may be at most "
            f"{size_text(MAX_KEPT_FILE)}"
        )


def check_ratio(compressed: int, out: int, kind: str) -> None:
    """Refuses a decompression bomb as soon as it shows (and any layer past MAX_LAYER_BYTES)."""
    check_inflation(compressed, out, f"the {kind} layer")


def check_inflation(
    compressed: int,
    out: int,
    what: str,
    *,
    most: int = MAX_LAYER_BYTES,
    ratio: int = MAX_RATIO,
    grace: int = RATIO_GRACE,
) -> None:
    """Refuses a decompressed stream past `most` bytes, or past `ratio` times its compressed size once
    more than `grace` bytes came out (the grace: small runs of zeros compress far better than any ratio)."""
    if out > most:
        raise LimitError(f"{what} decompresses to more than {size_text(most)}")
    if out > grace and out > ratio * max(compressed, 1):
        raise LimitError(
            f"{what} inflates {out // max(compressed, 1)}x its compressed size "
            f"(limit {ratio}x): a decompression bomb"
        )


def text_lines(text: str, what: str) -> list[str]:
    """The lines of a parsed text file, refused (LimitError) when one is longer than MAX_LINE_LENGTH."""
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_LENGTH:
            raise LimitError(
                f"{what}: line {number} is {len(line)} characters long (limit {MAX_LINE_LENGTH})"
            )
    return lines


def load_json(data: bytes, what: str) -> Any:
    """A JSON document of an image, bounded in size and depth (deep nesting overflows the parser's
    stack). ValueError for what is not JSON, as json.loads; LimitError beyond the limits."""
    if len(data) > MAX_JSON_SIZE:
        raise LimitError(f"{what} is {size_text(len(data))}, over the limit of {size_text(MAX_JSON_SIZE)}")
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return json.loads(data)  # too few brackets to nest too deep: no scan
    depth = deepest = 0
    in_string = escaped = False
    # One scan of the bytes: brackets outside strings tell the nesting before the parser recurses.
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise LimitError(f"{what} nests {deepest} levels deep (limit {MAX_JSON_DEPTH})")
    return json.loads(data)
