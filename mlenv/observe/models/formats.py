"""The non-pickle model formats, each read in one bounded pass: what the file records about its writer.

XGBoost JSON and UBJSON keep the writer's version at the top level (`"version": [3, 2, 0]`), after the
learner that makes up nearly all of the file; ONNX is a protobuf whose top-level fields hold the IR
version, the opsets and the converter; LightGBM's text model and safetensors record no library
version at all (the note says so). Large parts (trees, graphs, tensor data) are skipped as they
stream past, never held.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator

from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.observe.stream.decompress import ChunkReader

# A top-level JSON value kept while scanning (XGBoost's version is a three-item array).
MAX_KEPT_VALUE = 4096
# Nesting of JSON, UBJSON and protobuf messages: XGBoost models are < 10 deep, ONNX messages < 10.
MAX_DEPTH = 64
# A safetensors header: the format's own reader refuses headers over 100 MB.
MAX_SAFETENSORS_HEADER = 100_000_000
# UBJSON strings and keys held in memory (keys, type names); longer ones are data, skipped.
MAX_KEPT_STRING = 1 << 16
# A LightGBM header line (feature_names, feature_infos: tens of characters per feature).
MAX_HEADER_LINE = 16 << 20


class ModelFormatError(Exception):
    """The file is not a valid instance of the format its first bytes claim."""


def _version_text(value: object) -> str | None:
    if isinstance(value, list) and value and all(isinstance(n, int) and n >= 0 for n in value):
        return ".".join(str(n) for n in value)
    return None


def _xgboost_facts(fmt: str, top: dict[str, object]) -> ModelFacts:
    if "learner" not in top:
        # Well-formed, but some other document (a tokenizer, a config): not a model format mlenv knows.
        kind = "JSON" if fmt == "xgboost-json" else "UBJSON"
        return ModelFacts(format="unknown", note=f"a {kind} document that is not an XGBoost model")
    version = _version_text(top.get("version"))
    if version is None:
        return ModelFacts(
            format=fmt,
            producers=(Producer(library="xgboost"),),
            note="the XGBoost model has no [major, minor, patch] version at its top level",
        )
    return ModelFacts(format=fmt, producers=(Producer(library="xgboost", version=version),))


# -- JSON: a scan of the top-level object that keeps only short values --------------------------------

# A string (closed, or cut by the end of the buffer: no `close`) or one structural character.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*(?P<close>")?|[{}\[\],:]')
# Below the top level only strings and brackets matter: commas between numbers are most of XGBoost's
# JSON, and skipping them keeps the Python loop to one step per string or bracket.
_DEEP_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*(?P<close>")?|[{}\[\]]')


class _JsonScan:
    """The top level of one JSON object, fed buffer by buffer: keys and their short values."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = self.finished = False
        self.expect_key = False
        self.key: str | None = None
        self.capture: list[bytes] | None = None  # the current top-level value's bytes, while short
        self.captured = 0
        self.kept: dict[str, object] = {}
        self.offset = 0  # bytes of the document consumed before the current buffer

    def feed(self, buffer: bytes) -> bytes:
        """Consume `buffer`; returns the bytes to put before the next one (a string still open)."""
        position = 0
        while True:
            deep = self.depth >= 2 and self.capture is None
            match = (_DEEP_TOKENS if deep else _TOKENS).search(buffer, position)
            if match is None:
                break
            self.text(buffer[position : match.start()])
            token = match.group()
            if token[:1] == b'"' and match.group("close") is None:
                rest = buffer[match.start() :]
                self.offset += match.start()
                if len(rest) <= MAX_KEPT_STRING:
                    return rest
                # A long string (a base64 blob): data. Carry only its opening quote and a pending
                # escape, enough to find where it ends; a key this long is no key mlenv looks for.
                self.capture = None
                if self.depth == 1 and self.expect_key:
                    self.key = None
                odd = (len(rest) - len(rest.rstrip(b"\\"))) % 2
                return b'"' + (b"\\" if odd else b"")
            self.token(token, self.offset + match.start())
            position = match.end()
        self.text(buffer[position:])
        self.offset += len(buffer)
        return b""

    def text(self, gap: bytes) -> None:
        if not gap:
            return
        if self.finished and gap.strip():
            raise ModelFormatError("data after the end of the JSON document")
        if not self.started and gap.strip():
            raise ModelFormatError("the file does not hold a JSON object")
        if self.capture is not None:
            self.capture.append(gap)
            self.captured += len(gap)
            if self.captured > MAX_KEPT_VALUE:
                self.capture = None  # long: data, not a version

    def token(self, token: bytes, at: int) -> None:
        if self.finished:
            raise ModelFormatError(f"data after the end of the JSON document (byte {at})")
        if not self.started:
            if token != b"{":
                raise ModelFormatError("the file does not hold a JSON object")
            self.started, self.depth, self.expect_key = True, 1, True
            return
        if self.depth == 1:
            if self.expect_key:
                if token == b"}":
                    self.depth, self.finished = 0, True
                elif token[:1] == b'"':
                    self.key = json.loads(token) if len(token) <= MAX_KEPT_VALUE else None
                    self.expect_key = False
                else:
                    raise ModelFormatError(f"a JSON object key expected at byte {at}")
                return
            if token == b":":
                self.capture, self.captured = [], 0
                return
            if token in (b",", b"}"):
                self.keep()
                self.expect_key = token == b","
                if token == b"}":
                    self.depth, self.finished = 0, True
                return
        if token in (b"{", b"["):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ModelFormatError(f"the JSON nests deeper than {MAX_DEPTH} levels")
        elif token in (b"}", b"]"):
            self.depth -= 1
            if self.depth < 1:
                raise ModelFormatError(f"unbalanced JSON at byte {at}")
        if self.capture is not None:
            self.capture.append(token)
            self.captured += len(token)
            if self.captured > MAX_KEPT_VALUE:
                self.capture = None

    def keep(self) -> None:
        key, capture = self.key, self.capture
        self.key, self.capture = None, None
        if key is None:
            return
        if capture is None:
            self.kept[key] = None
            return
        try:
            self.kept[key] = json.loads(b"".join(capture))
        except ValueError:
            raise ModelFormatError(f"the value of the top-level key {key[:100]!r} is not JSON") from None


def json_top_level(reader: ChunkReader) -> dict[str, object]:
    """The top-level keys of a JSON object with the values that are short (others map to None).

    A scan of the structure only (strings and brackets, found by one regular expression per chunk):
    memory stays at one chunk plus the kept values, whatever the document's size."""
    scan = _JsonScan()
    carry = b""
    while True:
        chunk = reader.read(1 << 20)
        if not chunk:
            break
        carry = scan.feed(carry + chunk)
    if carry or not scan.finished:
        raise ModelFormatError("truncated JSON: the top-level object never closes")
    return scan.kept


def xgboost_json(reader: ChunkReader) -> ModelFacts:
    return _xgboost_facts("xgboost-json", json_top_level(reader))


# -- UBJSON (XGBoost's .ubj): length-prefixed, so skipping is cheap ---------------------------------

_UBJ_FIXED = {b"i": (1, ">b"), b"U": (1, ">B"), b"I": (2, ">h"), b"l": (4, ">i"), b"L": (8, ">q")}
_UBJ_SIZES = {
    b"i": 1,
    b"U": 1,
    b"I": 2,
    b"l": 4,
    b"L": 8,
    b"d": 4,
    b"D": 8,
    b"C": 1,
    b"T": 0,
    b"F": 0,
    b"Z": 0,
}
_SKIPPED = object()


class _Ubj:
    def __init__(self, reader: ChunkReader) -> None:
        self.reader = reader

    def take(self, size: int) -> bytes:
        data = self.reader.read(size)
        if len(data) != size:
            raise ModelFormatError(f"truncated UBJSON at byte {self.reader.offset}")
        return data

    def skip(self, size: int) -> None:
        if self.reader.skip(size) != size:
            raise ModelFormatError(f"truncated UBJSON at byte {self.reader.offset}")

    def marker(self) -> bytes:
        while True:
            byte = self.take(1)
            if byte != b"N":  # no-op
                return byte

    def integer(self, marker: bytes) -> int:
        fixed = _UBJ_FIXED.get(marker)
        if fixed is None:
            raise ModelFormatError(f"a UBJSON length of type {marker!r} at byte {self.reader.offset}")
        return int(struct.unpack(fixed[1], self.take(fixed[0]))[0])

    def length(self) -> int:
        size = self.integer(self.marker())
        if size < 0:
            raise ModelFormatError(f"a negative UBJSON length at byte {self.reader.offset}")
        return size

    def string(self) -> str | object:
        return self._text(self.length(), "string")

    def _text(self, size: int, what: str) -> str | object:
        """`size` bytes of UTF-8 (a string or a key); skipped past MAX_KEPT_STRING, not kept."""
        if size > MAX_KEPT_STRING:
            self.skip(size)
            return _SKIPPED
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError(f"a UBJSON {what} at byte {self.reader.offset} is not UTF-8") from None

    def value(self, marker: bytes, depth: int, *, keep: bool) -> object:
        if marker in _UBJ_FIXED:
            return self.integer(marker)
        if marker in (b"d", b"D"):
            self.skip(_UBJ_SIZES[marker])
            return _SKIPPED
        if marker in (b"T", b"F", b"Z"):
            return {b"T": True, b"F": False, b"Z": None}[marker]
        if marker == b"C":
            self.skip(1)
            return _SKIPPED
        if marker in (b"S", b"H"):
            return self.string()
        if marker in (b"[", b"{"):
            if depth >= MAX_DEPTH:
                raise ModelFormatError(f"the UBJSON nests deeper than {MAX_DEPTH} levels")
            return self.container(marker, depth + 1, keep=keep)
        raise ModelFormatError(f"an unknown UBJSON marker {marker!r} at byte {self.reader.offset - 1}")

    def container(self, kind: bytes, depth: int, *, keep: bool) -> object:
        """An array or object after its opening marker; only short values near the top are kept."""
        items: list[object] = []
        fields: dict[str, object] = {}
        typed: bytes | None = None
        count: int | None = None
        pending: bytes | None = self.marker()
        if pending == b"$":
            typed = self.marker()
            if self.marker() != b"#":
                raise ModelFormatError(
                    f"a typed UBJSON container without a count at byte {self.reader.offset}"
                )
            count, pending = self.length(), None
        elif pending == b"#":
            count, pending = self.length(), None
        if kind == b"[" and typed in _UBJ_SIZES and count is not None and (not keep or count > 16):
            # An optimised array of fixed-size items (tree weights, split conditions): skipped whole.
            self.skip(count * _UBJ_SIZES[typed])
            return _SKIPPED
        close = b"]" if kind == b"[" else b"}"
        index = 0
        while True:
            if count is not None:
                if index == count:
                    break
                marker = None
            else:
                marker = pending if pending is not None else self.marker()
                pending = None
                if marker == close:
                    break
            if kind == b"[":
                kept = keep and index < 16
                value = self.value(typed or marker or self.marker(), depth, keep=kept)
                if kept:
                    items.append(value)
            else:
                # An object's keys carry no type marker: `marker` is the type of the key's length.
                key = self._key(marker or self.marker())
                kept = keep and depth <= 1
                value = self.value(typed or self.marker(), depth, keep=kept)
                if kept and isinstance(key, str):
                    fields[key] = value
            index += 1
        return items if kind == b"[" else fields

    def _key(self, length_marker: bytes) -> str | object:
        size = self.integer(length_marker)
        if size < 0:
            raise ModelFormatError(f"a negative UBJSON key length at byte {self.reader.offset}")
        return self._text(size, "key")


def ubj_version_in_tail(tail: bytes) -> str | None:
    """The `version` array at the end of an XGBoost UBJSON serialization, from its last bytes."""
    at = tail.rfind(b"\x07version[")
    if at < 0:
        return None
    parser = _Ubj(ChunkReader([tail[at + len(b"\x07version[") :]]))
    try:
        return _version_text(parser.container(b"[", 1, keep=True))
    except ModelFormatError:
        return None


def xgboost_ubj(reader: ChunkReader) -> ModelFacts:
    parser = _Ubj(reader)
    if parser.marker() != b"{":
        raise ModelFormatError("the UBJSON does not hold an object")
    top = parser.container(b"{", 1, keep=True)
    if not isinstance(top, dict):
        raise ModelFormatError("the UBJSON does not hold an object")
    return _xgboost_facts("xgboost-ubj", top)


# -- ONNX: the protobuf wire format, top-level fields only ----------------------------------------------


def _varint(reader: ChunkReader) -> int | None:
    """A protobuf varint; None at a clean end of the stream."""
    result = shift = 0
    while True:
        byte = reader.read(1)
        if not byte:
            if shift == 0:
                return None
            raise ModelFormatError(f"truncated protobuf varint at byte {reader.offset}")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ModelFormatError(f"a protobuf varint longer than 10 bytes at byte {reader.offset}")


def _fields(reader: ChunkReader, end: int | None, keep: frozenset[int]) -> Iterator[tuple[int, object]]:
    """(field number, value) of one message up to byte `end` (None: the end of the stream); a
    length-delimited field is read only when its number is in `keep` (and short), skipped otherwise."""
    while end is None or reader.offset < end:
        tag = _varint(reader)
        if tag is None:
            if end is not None:
                raise ModelFormatError(f"truncated protobuf message at byte {reader.offset}")
            return
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ModelFormatError(f"a protobuf field number 0 at byte {reader.offset}")
        if wire == 0:
            value = _varint(reader)
            if value is None:
                raise ModelFormatError(f"truncated protobuf field at byte {reader.offset}")
            yield number, value
        elif wire in (1, 5):
            fixed = 8 if wire == 1 else 4
            if reader.skip(fixed) != fixed:
                raise ModelFormatError(f"truncated protobuf field at byte {reader.offset}")
        elif wire == 2:
            size = _varint(reader)
            if size is None:
                raise ModelFormatError(f"truncated protobuf field at byte {reader.offset}")
            if end is not None and reader.offset + size > end:
                raise ModelFormatError(f"a protobuf field at byte {reader.offset} overruns its message")
            if number in keep and size <= MAX_KEPT_STRING:
                data = reader.read(size)
                if len(data) != size:
                    raise ModelFormatError(f"truncated protobuf field at byte {reader.offset}")
                yield number, data
            else:
                if reader.skip(size) != size:
                    raise ModelFormatError(f"truncated protobuf field at byte {reader.offset}")
                yield number, None
        else:
            raise ModelFormatError(f"protobuf wire type {wire} at byte {reader.offset} (not a message)")
        if end is not None and reader.offset > end:
            raise ModelFormatError(f"a protobuf field at byte {reader.offset} overruns its message")


def _proto_text(data: object, what: str) -> str:
    if not isinstance(data, bytes):
        raise ModelFormatError(f"ONNX {what} is not a string")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"ONNX {what} is not UTF-8") from None


def onnx(reader: ChunkReader) -> ModelFacts:
    """ModelProto: 1 ir_version, 2 producer_name, 3 producer_version, 8 opset_import (1 domain,
    2 version); the graph (7), training info (20) and functions (25) are skipped."""
    ir_version: int | None = None
    producer_name = producer_version = ""
    opsets: dict[str, int] = {}
    graph = False
    for number, value in _fields(reader, None, frozenset({2, 3, 8})):
        if number == 7:
            graph = True
        elif number == 1 and isinstance(value, int):
            ir_version = value
        elif number == 2:
            producer_name = _proto_text(value, "producer_name")
        elif number == 3:
            producer_version = _proto_text(value, "producer_version")
        elif number == 8 and isinstance(value, bytes):
            sub = ChunkReader([value])
            domain, version = "", None
            for sub_number, sub_value in _fields(sub, len(value), frozenset({1})):
                if sub_number == 1:
                    domain = _proto_text(sub_value, "opset domain")
                elif sub_number == 2 and isinstance(sub_value, int):
                    version = sub_value
            if version is None:
                raise ModelFormatError("an ONNX opset_import without a version")
            opsets[domain or "ai.onnx"] = version
    if ir_version is None:
        raise ModelFormatError("no ir_version: not an ONNX model")
    if not graph:
        raise ModelFormatError("no graph: not a complete ONNX model (truncated?)")
    details = [("ir_version", str(ir_version))]
    details += [(f"opset:{domain}", str(version)) for domain, version in opsets.items()]
    if producer_name:
        details.append(("producer_name", producer_name[:200]))
    if producer_version:
        details.append(("producer_version", producer_version[:200]))
    converter = f"{producer_name} {producer_version}".strip() or "no converter"
    return ModelFacts(
        format="onnx",
        details=tuple(sorted(details)),
        note=(
            f"ONNX records the converter that wrote it ({converter[:200]}), not a runtime version: "
            "a runtime must support its ir_version and opsets"
        ),
    )


# -- LightGBM's text model ------------------------------------------------------------------------------


def lightgbm_text(reader: ChunkReader) -> ModelFacts:
    """The header lines up to the first blank line: `version=v4` is the model format's version."""
    details: list[tuple[str, str]] = []
    first = True
    while True:
        line = _text_line(reader)
        if line is None or not line.strip():
            break
        if first:
            if line.strip() != "tree":
                raise ModelFormatError("not a LightGBM text model (no 'tree' first line)")
            first = False
            continue
        key, _, value = line.partition("=")
        if key in ("version", "num_class", "objective", "max_feature_idx"):
            details.append((key if key != "version" else "model_format", value.strip()[:200]))
    if first:
        raise ModelFormatError("an empty LightGBM text model")
    if not any(key == "model_format" for key, _ in details):
        raise ModelFormatError("a LightGBM text model without its version= line")
    return ModelFacts(
        format="lightgbm-text",
        producers=(Producer(library="lightgbm"),),
        details=tuple(sorted(details)),
        note="a LightGBM text model records its format version, not lightgbm's",
    )


def _text_line(reader: ChunkReader) -> str | None:
    parts: list[bytes] = []
    have = 0
    while True:
        chunk = reader.peek(1 << 16)
        if not chunk:
            break
        end = chunk.find(b"\n")
        data = reader.read(len(chunk) if end < 0 else end + 1)
        have += len(data)
        if have > MAX_HEADER_LINE:
            raise ModelFormatError(f"a LightGBM header line longer than {MAX_HEADER_LINE >> 20} MiB")
        parts.append(data)
        if end >= 0:
            break
    if not parts:
        return None
    try:
        return b"".join(parts).decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ModelFormatError("a LightGBM header line is not UTF-8") from None


# -- safetensors ----------------------------------------------------------------------------------------


def safetensors(reader: ChunkReader) -> ModelFacts:
    """An 8-byte little-endian header length, the JSON header, then the tensors' bytes (checked to
    end exactly where the header's offsets say)."""
    prefix = reader.read(8)
    if len(prefix) != 8:
        raise ModelFormatError("truncated safetensors header length")
    size = struct.unpack("<Q", prefix)[0]
    if size > MAX_SAFETENSORS_HEADER:
        raise ModelFormatError(f"a safetensors header of {size} bytes (the format allows 100 MB)")
    data = reader.read(size)
    if len(data) != size:
        raise ModelFormatError("truncated safetensors header")
    try:
        header = json.loads(data)
    except (ValueError, RecursionError):
        raise ModelFormatError("the safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ModelFormatError("the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise ModelFormatError("the safetensors __metadata__ is not a map of strings")
    end = 0
    dtypes: set[str] = set()
    for tensor, entry in header.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(isinstance(n, int) and n >= 0 for n in entry["data_offsets"])
        ):
            raise ModelFormatError(
                f"the safetensors entry {tensor[:100]!r} lacks dtype, shape or data_offsets"
            )
        begin, stop = entry["data_offsets"]
        if stop < begin:
            raise ModelFormatError(f"the safetensors entry {tensor[:100]!r} ends before it begins")
        end = max(end, stop)
        dtypes.add(entry["dtype"])
    have = reader.skip(end)
    if have != end:
        raise ModelFormatError(f"truncated safetensors data: {have} of the {end} bytes the header declares")
    details = [("tensors", str(len(header))), ("dtypes", ",".join(sorted(dtypes))[:200])]
    details += [(f"metadata:{key[:100]}", value[:200]) for key, value in sorted((metadata or {}).items())]
    return ModelFacts(
        format="safetensors",
        details=tuple(sorted(details)),
        note="safetensors records no producer version (tensors and string metadata only)",
    )
