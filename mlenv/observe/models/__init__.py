"""Model files read without executing them: which library and version wrote each, and what it imports.

`read_model` recognises the format by its first bytes (the name's suffix only breaks ties), reads
the stream once and keeps memory bounded whatever the file's size: pickles are walked opcode by
opcode (never unpickled), compressed joblib files inflated as they stream, zip archives read through
their directory, protobuf and UBJSON skipped field by field. Every malformed or hostile file is one
ModelError naming the file.
"""

from __future__ import annotations

import re
import tempfile
from typing import BinaryIO

from mlenv.errors import MlenvError
from mlenv.model.modelfacts import ModelFacts
from mlenv.observe.models import formats
from mlenv.observe.models.archives import read_zip
from mlenv.observe.models.compressed import compression_of, inflate
from mlenv.observe.models.facts import pickle_model_facts
from mlenv.observe.models.formats import ModelFormatError
from mlenv.observe.models.pickles import PickleError, PickleFacts, walk_all
from mlenv.observe.stream.decompress import ChunkReader, StreamError, read_chunks


class ModelError(MlenvError):
    """A model file is malformed or hostile (truncated, a bomb, a crafted header). Names the file."""


def read_model(stream: BinaryIO, *, name: str) -> ModelFacts:
    """What the model file in `stream` says about itself (its format, producers, imports).

    `name` is the file as the user knows it (a project path or a path in an image); it names the
    file in every error and its suffix breaks ties between formats that share first bytes."""
    shown = name.replace("\n", "\\n")[:300]
    try:
        return _read(stream, name)
    except (PickleError, StreamError, ModelFormatError) as error:
        raise ModelError(f"model {shown}: {_one_line(str(error))}") from None
    except OSError as error:
        raise ModelError(f"model {shown}: cannot be read ({error.strerror or error})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


# Archives larger than this are spooled to a temporary file when the stream cannot seek.
SPOOL_IN_MEMORY = 16 << 20
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _read(stream: BinaryIO, name: str) -> ModelFacts:
    start = stream.tell() if _seekable(stream) else None
    reader = ChunkReader(read_chunks(stream))
    head = reader.peek(16)
    if not head:
        raise ModelFormatError("the file is empty")
    lower = name.lower()
    kind = compression_of(head)
    if head.startswith(_ZIP_MAGICS):
        return _zip(stream, start, reader)
    if kind is not None:
        inner = ChunkReader(inflate(kind, read_chunks(_ReaderFile(reader))))
        again = compression_of(inner.peek(8))
        if again is not None:
            # joblib inflates once: a compressed stream inside is not a pickle it can load (and nesting
            # is how a small file hides a large expansion).
            raise ModelFormatError(f"a {again} stream inside the {kind} stream: joblib decompresses once")
        if not _looks_like_pickle(inner.peek(16) or b"\x00", lower):
            return ModelFacts(format="unknown", note=f"a {kind}-compressed file that holds no pickle")
        return _pickle_facts(inner, f"joblib+{kind}")
    if _looks_like_pickle(head, lower):
        return _pickle_facts(reader, "joblib" if lower.endswith(".joblib") else "pickle")
    if lower.endswith(".safetensors") or _looks_like_safetensors(head):
        return formats.safetensors(reader)
    if lower.endswith(".onnx") or _looks_like_onnx(head):
        return formats.onnx(reader)
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return formats.lightgbm_text(reader)
    if head[:1] == b"{":
        if head[1:2] in (b"i", b"U", b"I", b"l", b"L", b"N", b"$", b"#", b"}"):
            return formats.xgboost_ubj(reader)
        return formats.xgboost_json(reader)
    if lower.endswith(".ubj"):
        return formats.xgboost_ubj(reader)
    return ModelFacts(
        format="unknown",
        note=(
            "not a format mlenv reads (pickle, joblib, skops, XGBoost JSON/UBJ, ONNX, LightGBM text, "
            "torch zip, safetensors): no producer recorded"
        ),
    )


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _looks_like_onnx(head: bytes) -> bool:
    # ir_version (field 1, a one-byte varint), then another ModelProto field: producer_name (2),
    # producer_version (3), domain (4), model_version (5), doc_string (6), graph (7) or opset_import (8).
    return (
        len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in b"\x12\x1a\x22\x28\x32\x3a\x42"
    )


def _looks_like_safetensors(head: bytes) -> bool:
    # An 8-byte little-endian header length, then the JSON header's opening brace.
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _zip(stream: BinaryIO, start: int | None, reader: ChunkReader) -> ModelFacts:
    if start is not None:
        stream.seek(start)
        return read_zip(stream)
    # A stream that cannot seek (a member read out of an image layer): the zip's directory is at its
    # end, so the archive is spooled (to disk past SPOOL_IN_MEMORY) and read from there.
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="mlenv-model-") as spool:
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            spool.write(chunk)
        spool.seek(0)
        return read_zip(spool)


class _ReaderFile:
    """A ChunkReader seen as a file (read(n)), to chain one stream into the next."""

    def __init__(self, reader: ChunkReader) -> None:
        self._reader = reader

    def read(self, size: int) -> bytes:
        return self._reader.read(size)


# How a protocol 0 or 1 pickle of a model starts: a GLOBAL line (copy_reg._reconstructor, a class), a
# MARK before a dict, list, tuple item or global (`(dp0`, `(K`), or an empty container with its memo
# put; text files rarely start so (a CSV's "col,..." is no GLOBAL line).
_OLD_PROTOCOL_START = re.compile(
    rb"c[A-Za-z_][\w.]*\n[A-Za-z_]|\((dp|lp|tp|[IKJLSVXUFGNcT(\]}])|[}\])](\.|[(q\x94]|p\d)"
)


def _looks_like_pickle(head: bytes, lower: str) -> bool:
    if lower.endswith((".pkl", ".pickle", ".joblib", ".pck", ".sav")):
        return True  # named a pickle: read as one, so a malformed one is an error rather than "unknown"
    if head[0] == 0x80:
        return len(head) > 1 and head[1] <= 5
    return _OLD_PROTOCOL_START.match(head) is not None


def _pickle_facts(reader: ChunkReader, container: str) -> ModelFacts:
    facts = PickleFacts()
    walk_all(reader, facts, joblib=True)
    fmt = container
    if container == "pickle" and facts.arrays:
        fmt = "joblib"  # NumpyArrayWrapper with in-band data: only joblib.load reads it back
    return pickle_model_facts(facts, fmt)


__all__ = ["ModelError", "read_model"]
