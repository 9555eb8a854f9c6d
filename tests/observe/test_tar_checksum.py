"""A tar header's checksum: POSIX's unsigned byte sum, and the signed one some old tar writers stored
(bytes above 127 counted as negative). Both are accepted; anything else is not a header."""

from __future__ import annotations

import io
import tarfile

from mlenv.observe.stream.tar import _checksum_ok


def _header(name: str) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        tar.addfile(info)
    return out.getvalue()[:512]


def _with_checksum(header: bytes, value: int) -> bytes:
    return header[:148] + f"{value:06o}\0 ".encode() + header[156:]


def test_the_unsigned_and_the_signed_sum_are_both_a_header_and_nothing_else_is() -> None:
    header = _header("caf\xe9-\xff\xfe.txt")  # three bytes above 127 in the name
    rest = header[:148] + header[156:]
    unsigned = sum(rest) + 256
    signed = sum(b - 256 if b > 127 else b for b in rest) + 256
    assert signed == unsigned - 3 * 256
    assert _checksum_ok(_with_checksum(header, unsigned))
    assert _checksum_ok(_with_checksum(header, signed))
    for wrong in (unsigned + 1, signed - 1, unsigned - 256, signed + 256 * 4):
        assert not _checksum_ok(_with_checksum(header, wrong)), wrong


def test_a_plain_header_has_one_sum() -> None:
    header = _header("plain.txt")
    rest = header[:148] + header[156:]
    assert _checksum_ok(_with_checksum(header, sum(rest) + 256))
    assert not _checksum_ok(_with_checksum(header, sum(rest) + 255))
