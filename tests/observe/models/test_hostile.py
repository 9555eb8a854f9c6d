"""Malformed and hostile model files: each is one ModelError line naming the file, in bounded memory."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import lz4.frame
import pytest

from mlenv.observe.models import ModelError, pickles, read_model
from tests.observe.models.conftest import Made

REPO = Path(__file__).resolve().parents[3]


def refused(data: bytes, name: str = "models/evil.pkl") -> str:
    with pytest.raises(ModelError) as caught:
        read_model(io.BytesIO(data), name=name)
    message = str(caught.value)
    assert message.startswith(f"model {name}: "), message
    assert "\n" not in message and len(message) < 700
    return message


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _wrapper(shape: tuple[int, ...], dtype: str = "u1", order: str = "C") -> bytes:
    """A joblib NumpyArrayWrapper's pickle opcodes up to its BUILD (the raw bytes follow)."""
    out = b"\x80\x04" + _unicode("joblib.numpy_pickle") + _unicode("NumpyArrayWrapper") + b"\x93)\x81}("
    out += _unicode("subclass") + _unicode("numpy") + _unicode("ndarray") + b"\x93"
    out += _unicode("shape") + b"(" + b"".join(b"\x8a\x08" + struct.pack("<q", n) for n in shape) + b"t"
    out += _unicode("order") + _unicode(order)
    out += _unicode("dtype") + _unicode("numpy") + _unicode("dtype") + b"\x93"
    minus_one = b"J\xff\xff\xff\xff"
    out += _unicode(dtype) + b"\x89\x88\x87R"  # numpy.dtype(dtype, False, True)
    out += b"(K\x03" + _unicode("|") + b"NNN" + minus_one + minus_one + b"K\x00tb"  # its state, built
    out += _unicode("numpy_array_alignment_bytes") + b"K\x10ub"
    return out


PICKLES = {
    "empty": (b"", "empty"),
    "garbage": (b"\xe6 garbage \x00\xff", "not a pickle opcode"),
    "no stop": (b"\x80\x04N", "truncated"),
    "unknown opcode": (b"\x80\x04\xff", "not a pickle opcode"),
    "future protocol": (b"\x80\x09N.", "protocol 9"),
    "pops an empty stack": (b"\x80\x04R.", "empty stack"),
    "memo never put": (b"\x80\x04h\x05.", "never put"),
    "global of non-strings": (b"\x80\x04K\x01K\x02\x93.", "two strings"),
    "huge unicode": (b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"abc", "truncated"),
    "huge bytes": (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc", "truncated"),
    "huge long": (b"\x80\x04\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01", "truncated"),
    "negative string length": (b"\x80\x02T" + struct.pack("<i", -5) + b"x.", "negative length"),
    "a million marks": (b"(" * 1_000_001, "MARKs"),
    "array larger than any disk": (_wrapper((1 << 40, 1 << 20)), "GiB"),
    "array of a bad order": (_wrapper((4,), order="X") + b"\x00" * 20, "order"),
    "array whose data ends early": (_wrapper((1000,)) + b"\x0f" + b"\xff" * 15 + b"\x00" * 10, "truncated"),
    "line without end": (b"cos\n" + b"s" * 200_000, "no newline"),
}


@pytest.mark.parametrize("case", sorted(PICKLES))
def test_crafted_pickles(case: str) -> None:
    data, expected = PICKLES[case]
    assert expected in refused(data)


def test_a_wrapper_with_its_data_is_skipped() -> None:
    # The crafted wrapper above is what joblib writes: with its padding and data it reads as a model.
    data = _wrapper((1000,)) + b"\x0f" + b"\xff" * 15 + b"\x00" * 1000 + b"."
    facts = read_model(io.BytesIO(data), name="w.joblib")
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in facts.imports and facts.unsafe == ()


def _zeros(compressor: object, size: int) -> bytes:
    piece = b"\x00" * (1 << 20)
    out = [compressor.compress(piece) for _ in range(size >> 20)]  # type: ignore[attr-defined]
    return b"".join(out) + compressor.flush()  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["zlib", "gzip", "lz4"])
def test_a_decompression_bomb_is_refused_early(kind: str) -> None:
    # A wrapper declaring an 8 GiB array, then zeros: read to the end it would inflate 8 GiB.
    head = _wrapper((8 << 30,)) + b"\x0f" + b"\xff" * 15
    size = 400 << 20
    if kind == "zlib":
        compressor = zlib.compressobj(9)
        data = compressor.compress(head) + _zeros(compressor, size)
    elif kind == "gzip":
        compressor = zlib.compressobj(9, wbits=31)
        data = compressor.compress(head) + _zeros(compressor, size)
    else:
        compressor = lz4.frame.LZ4FrameCompressor()
        data = compressor.begin() + compressor.compress(head) + _zeros(compressor, size)
    assert "decompression bomb" in refused(data, f"models/bomb.{kind}.joblib")


def test_nested_compression_is_refused() -> None:
    data = b"\x80\x04N."
    for _ in range(10):
        data = gzip.compress(data)
    assert "gzip stream inside the gzip stream" in refused(data)
    assert "inside" in refused(bz2.compress(zlib.compress(b"\x80\x04N.")))


def test_corrupt_compressed_streams() -> None:
    assert "corrupt zlib" in refused(b"\x78\x9c" + b"\xff" * 100)
    assert "truncated gzip" in refused(gzip.compress(b"\x80\x04N." * 1000)[:-30])


_HEADER = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
FORMATS = {
    "safetensors header too big": (struct.pack("<Q", 1 << 40) + b"{", "a.safetensors", "100 MB"),
    "safetensors data missing": (
        struct.pack("<Q", len(_HEADER)) + _HEADER + b"\x00" * 4,
        "a.safetensors",
        "truncated safetensors data",
    ),
    "safetensors nested header": (
        struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
        "a.safetensors",
        "JSON",
    ),
    "onnx field longer than the file": (
        b"\x08\x08\x3a\xff\xff\xff\xff\x0f\x00",
        "m.onnx",
        "truncated",
    ),
    "onnx endless varint": (b"\x08" + b"\xff" * 20, "m.onnx", "varint"),
    "onnx group wire type": (b"\x08\x08\x0b", "m.onnx", "wire type"),
    "onnx without ir_version": (b"\x12\x03abc", "m.onnx", "ir_version"),
    "ubj key longer than the file": (b"{L" + struct.pack(">q", 1 << 60) + b"x", "m.ubj", "truncated"),
    "ubj nested": (b"{U\x01a" + b"[" * 200, "m.ubj", "deeper"),
    "ubj negative length": (b"{U\x01a[$d#L" + struct.pack(">q", -1), "m.ubj", "negative"),
    "json never closes": (b'{"learner": {"a": [1, 2', "m.json", "never closes"),
    "json nested": (b'{"learner": ' + b"[" * 200, "m.json", "deeper"),
    "json garbage after": (b'{"learner": {}, "version": [1, 2, 3]} {}', "m.json", "after the end"),
    "json not an object": (b'{"learner"', "m.json", "never closes"),
    "json bad version value": (b'{"learner": {}, "version": [1, 2,, 3]}', "m.json", "not JSON"),
    "lightgbm line without end": (b"tree\nversion=v4\nfeature_names=" + b"f " * (9 << 20), "m.txt", "MiB"),
    "lightgbm without version": (b"tree\nnum_class=1\n\n", "m.txt", "version"),
}


@pytest.mark.parametrize("case", sorted(FORMATS))
def test_crafted_files_of_other_formats(case: str) -> None:
    data, name, expected = FORMATS[case]
    assert expected in refused(data, name)


def test_a_zip_bomb_member(tmp_path: Path) -> None:
    path = tmp_path / "bomb.skops"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("schema.json", b" " * (60 << 20))
    assert "inflation" in refused(path.read_bytes(), "bomb.skops")


def test_a_skops_schema_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", b"{not json")
    assert "not JSON" in refused(path.read_bytes(), "bad.skops")


@pytest.mark.network
@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("sklearn", {}),
        ("sklearn", {"compress": "gzip"}),
        ("sklearn", {"compress": "lz4"}),
        ("sklearn", {"compress": "xz"}),
        ("sklearn", {"protocol": 0}),
        ("xgboost", {}),
        ("xgboost", {"ubj": True}),
        ("onnx", {}),
        ("safetensors", {}),
        ("skops", {}),
    ],
)
def test_every_real_format_truncated_is_refused(made: Made, kind: str, options: dict[str, object]) -> None:
    path = made.get(kind, **options)
    data = path.read_bytes()
    # Protobuf has no end marker: an ONNX file cut exactly between two top-level fields after its graph
    # (here at 90%, after the first opset) is a valid, smaller message, for onnx.load as for this reader.
    fractions = (0.1, 0.5) if kind == "onnx" else (0.1, 0.5, 0.9)
    for fraction in fractions:
        refused(data[: int(len(data) * fraction)], path.name)


# -- memory: a model far larger than what the reader may hold --------------------------------------

_MEASURE = """
import pickle, sys
for name in ("load", "loads", "Unpickler"):
    setattr(pickle, name, None)  # the reader must not need them
from mlenv.observe.models import read_model
if len(sys.argv) > 1:
    with open(sys.argv[1], "rb") as handle:
        print(read_model(handle, name=sys.argv[1]).format)
"""
# A child's ru_maxrss starts at its parent's (Linux keeps the high-water mark across fork and exec): a
# child of this pytest would report pytest's size. A small launcher runs the reader and reports the
# reader's own peak (os.wait4), as tests/test_corpus.py measures mlenv.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
out = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
print(out.strip() or "-", usage.ru_maxrss >> 10, os.waitstatus_to_exitcode(status))
"""


def _peak_mib(*argv: str) -> tuple[str, int]:
    """The format the reader found in argv[0] (none given: only the import) and its peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _MEASURE, *argv]
    fmt, peak, code = subprocess.run(
        command, capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert code == "0", f"the reader failed on {argv}"
    return fmt, int(peak)


def _baseline_mib() -> int:
    return _peak_mib()[1]


@pytest.mark.network
@pytest.mark.parametrize("compress", [None, "gzip"])
def test_a_large_model_is_read_in_bounded_memory(made: Made, compress: str | None) -> None:
    path = made.get("large", megabytes=320, compress=compress)
    assert path.stat().st_size > 300 << 20
    fmt, peak = _peak_mib(str(path))
    assert fmt == ("joblib" if compress is None else "joblib+gzip")
    # The walk keeps a few chunks (1 MiB each) and the symbolic stack: far below the file's 320 MiB.
    assert peak - _baseline_mib() < 48, f"peak {peak} MiB reading a {path.stat().st_size >> 20} MiB model"


def test_a_large_json_model_is_scanned_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    with path.open("wb") as out:
        out.write(b'{"learner": {"trees": [')
        row = b'{"split_conditions": [' + b"0.123456789, " * 2000 + b'1.0], "name": "t\\"ree\\\\"},'
        for _ in range((300 << 20) // len(row)):
            out.write(row)
        out.write(b'{}]}, "version": [2, 1, 4]}')
    fmt, peak = _peak_mib(str(path))
    assert fmt == "xgboost-json"
    assert peak - _baseline_mib() < 48
    with path.open("rb") as handle:
        assert read_model(handle, name="model.json").producers[0].version == "2.1.4"


# Floods of what the walk keeps, each just under its limit (so read) and just over it (so refused):
# memoized objects, strings and calls. Peak memory stays under 256 MiB either way.
FLOODS = {
    "memoized tuples": (lambda n: b"K\x01\x85\x940" * n, pickles.MAX_OBJECTS, "objects"),
    "memoized strings": (
        lambda n: b"".join(b"\x8c\x1e" + b"%030d" % i + b"\x940" for i in range(n)),
        pickles.MAX_MEMO,
        "memo",
    ),
    # NEWOBJ of one class, each result memoized: the memo's limit comes first.
    "memoized calls": (
        lambda n: b"\x8c\x01m\x8c\x01C\x93\x94" + b"h\x00)\x81\x940" * (n - 1),
        pickles.MAX_MEMO,
        "memo",
    ),
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_floods_of_kept_values_stay_in_bounded_memory(tmp_path: Path, flood: str) -> None:
    make, limit, word = FLOODS[flood]
    within = tmp_path / "within.pkl"
    within.write_bytes(b"\x80\x04" + make(limit - 10) + b"N.")
    fmt, peak = _peak_mib(str(within))
    assert fmt == "pickle"
    assert peak < 256, f"{flood}: {peak} MiB"
    over = b"\x80\x04" + make(limit + 10) + b"N."
    assert word in refused(over)
