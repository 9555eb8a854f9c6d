"""Fuzzing the layer reader: whatever the bytes, reading a layer ends in its index or a StreamError
(which every loader turns into one ImageError line), never another exception, and in bounded time."""

from __future__ import annotations

import gzip

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlenv.observe.fs.rootfs import index_layer
from mlenv.observe.probes.dpkg import parse_status
from mlenv.observe.probes.osrelease import parse_os_release
from mlenv.observe.probes.python import parse_pyvenv_cfg, parse_record
from mlenv.observe.stream.decompress import StreamError
from tests.observe.layers import chunked, layer_tar
from tests.observe.test_malformed import header

_SEED = layer_tar(
    [
        ("dir", "etc"),
        ("file", "etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
        ("symlink", "etc/link", "os-release"),
        ("file", "usr/share/" + "n" * 120 + "/f", b"x" * 700),
    ]
)
_FIELDS = (0, 100, 108, 116, 124, 136, 148, 156, 157, 257, 345)


def _read(data: bytes, compress: bool) -> None:
    blob = gzip.compress(data, mtime=0) if compress else data
    try:
        index_layer(chunked(blob, 700), interest=lambda path: True, threaded=False)
    except StreamError:
        pass  # the one error a malformed layer may raise


@settings(max_examples=200, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(_SEED) - 1), st.sampled_from(_FIELDS), st.binary(min_size=1, max_size=12)
        ),
        max_size=6,
    ),
    cut=st.integers(0, len(_SEED)),
    compress=st.booleans(),
)
def test_a_mutated_layer_reads_or_fails_with_a_stream_error(
    edits: list[tuple[int, int, bytes]], cut: int, compress: bool
) -> None:
    data = bytearray(_SEED)
    for position, field, value in edits:
        # Either a byte anywhere, or a header field of the first headers, overwritten.
        start = position if position % 2 else (position // 2048) * 512 + field
        data[start : start + len(value)] = value
    _read(bytes(data[: max(cut, 1)] if cut < len(_SEED) // 2 else data), compress)


@settings(max_examples=200, deadline=2000, database=None)
@given(
    name=st.binary(min_size=1, max_size=100),
    size=st.binary(min_size=12, max_size=12),
    typeflag=st.binary(min_size=1, max_size=1),
    body=st.binary(max_size=2048),
)
def test_a_crafted_header_reads_or_fails_with_a_stream_error(
    name: bytes, size: bytes, typeflag: bytes, body: bytes
) -> None:
    _read(header(name, size=size, typeflag=typeflag) + body + bytes(1024), compress=False)


@settings(max_examples=200, deadline=2000, database=None)
@given(data=st.binary(max_size=4096))
def test_the_text_parsers_of_the_probes_answer_or_fail_with_a_stream_error(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for parse in (parse_os_release, parse_pyvenv_cfg, parse_record):
        try:
            parse(text)
        except StreamError:
            pass
    try:
        parse_status(data)
        parse_status(data, require_status=False)
    except StreamError:
        pass
