"""The chunked-coding decoder that reads `docker save` streams: the body byte for byte, however the
connection splits it, and a clear error for a framing that is not chunked coding."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlenv.sources.chunked import MAX_LINE, ChunkedError, dechunked


def encode(parts: list[bytes], *, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in parts if p)
    return out + b"0\r\n" + trailer + b"\r\n"


class Pieces:
    """A read1 that hands out the wire bytes in the given sizes, in turn (as a socket may), then nothing."""

    def __init__(self, wire: bytes, sizes: list[int]) -> None:
        self.wire, self.sizes, self.pos, self.reads = wire, sizes, 0, 0
        self.last_start = 0

    def read1(self, limit: int) -> bytes:
        size = min(self.sizes[self.reads % len(self.sizes)], limit)
        self.reads += 1
        self.last_start = self.pos
        piece = self.wire[self.pos : self.pos + size]
        self.pos += len(piece)
        return piece


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.binary(min_size=0, max_size=300), max_size=12),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
    piece=st.integers(min_value=1, max_value=1000),
)
def test_the_body_is_the_chunks_joined_whatever_the_reads(
    parts: list[bytes], sizes: list[int], piece: int
) -> None:
    message = encode(parts)
    reader = Pieces(message + b"NEXT RESPONSE", sizes)
    got = list(dechunked(reader.read1, piece=piece))
    assert b"".join(got) == b"".join(parts)
    assert all(got), "no empty piece is handed out"
    assert all(len(p) >= piece for p in got[:-1]), "pieces are joined up to the asked size"
    # No read is asked for once the message is complete (the connection may hold nothing more).
    assert reader.last_start < len(message)


def test_extensions_and_trailers_are_passed_over() -> None:
    body = os.urandom(100_000)
    wire = encode([body[:70_000], body[70_000:]], extension=b";name=value", trailer=b"X-Sum: 1\r\n")
    assert b"".join(dechunked(io.BufferedReader(io.BytesIO(wire)).read1)) == body


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"5\r\nabc", "the connection ended inside the chunked body"),
        (b"5\r\nabcde\r\n", "the connection ended inside the chunked body"),
        (b"zz\r\nabc\r\n0\r\n\r\n", "not a chunk size: b'zz'"),
        (b"-5\r\nabc\r\n", "not a chunk size"),
        (b"\r\n", "not a chunk size: b''"),
        (b"3\r\nabcXY0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"1" * 17 + b"\r\n", "not a chunk size"),
        (b"4" * (MAX_LINE + 10), f"a chunk line longer than {MAX_LINE} bytes"),
    ],
)
def test_a_broken_framing_is_a_chunked_error(wire: bytes, message: str) -> None:
    with pytest.raises(ChunkedError, match=message.replace("(", r"\(").replace("[", r"\[")):
        b"".join(dechunked(io.BufferedReader(io.BytesIO(wire)).read1))
