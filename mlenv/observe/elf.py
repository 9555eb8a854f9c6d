"""What an ELF shared object asks of the dynamic loader: DT_NEEDED, DT_SONAME, DT_RUNPATH and DT_RPATH.

A reader of its own rather than pyelftools: it needs four tags of one segment, reads them through a
`read_at(offset, size)` callable (a wheel's zip member, a file, bytes kept by the image reader) without
mapping or loading anything, and bounds every count and size an ELF from an image or a wheel declares.
Only the program headers are used, as the loader does: section headers can be stripped or forged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from mlenv.errors import MlenvError

MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
ET_EXEC, ET_DYN = 2, 3
# Bounds on what a hostile ELF may declare: real shared objects have < 20 program headers, a dynamic
# segment of < 100 entries (libtorch_cpu.so: 60) and names far shorter than PATH_MAX.
MAX_PROGRAM_HEADERS = 512
MAX_DYNAMIC_BYTES = 1 << 20
MAX_NEEDED = 4096
MAX_STRING = 4096

ReadAt = Callable[[int, int], bytes]


class ElfError(MlenvError):
    """A file that starts like an ELF but whose headers do not hold together."""


@dataclass(frozen=True, kw_only=True)
class Dynamic:
    """The loader-facing part of one ELF object. `runpath`/`rpath` are None when the tag is absent
    (an empty RUNPATH still switches RPATH off); entries are as written, $ORIGIN unexpanded."""

    needed: tuple[str, ...] = ()
    soname: str | None = None
    runpath: tuple[str, ...] | None = None
    rpath: tuple[str, ...] | None = None
    machine: int = 0
    bits: int = 64


def read_dynamic(read_at: ReadAt, size: int, *, what: str) -> Dynamic | None:
    """The dynamic part of the ELF read through `read_at` (`size` bytes long); None when it is not an
    ELF executable or shared object (no magic, an object file, a core). A static ELF has no needs.
    ElfError, naming `what`, for headers that point outside the file or past a bound."""
    head = read_at(0, 64)
    if len(head) < 16 or head[:4] != MAGIC:
        return None
    bits = {1: 32, 2: 64}.get(head[4])
    order = {1: "<", 2: ">"}.get(head[5])
    if bits is None or order is None:
        raise ElfError(f"{what}: an ELF of unknown class {head[4]} or byte order {head[5]}")
    if len(head) < (64 if bits == 64 else 52):
        raise ElfError(f"{what}: an ELF header cut short ({len(head)} bytes)")
    if bits == 64:
        e_type, machine = struct.unpack_from(order + "HH", head, 16)
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        entry_format, want_entry = order + "IIQQQQQQ", 56
    else:
        e_type, machine = struct.unpack_from(order + "HH", head, 16)
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
        entry_format, want_entry = order + "IIIIIIII", 32
    if e_type not in (ET_EXEC, ET_DYN):
        return None
    if phnum > MAX_PROGRAM_HEADERS:
        raise ElfError(f"{what}: declares {phnum} program headers (limit {MAX_PROGRAM_HEADERS})")
    if phnum and phentsize < want_entry:
        raise ElfError(f"{what}: program header entries of {phentsize} bytes, {want_entry} needed")
    table = _within(read_at, size, phoff, phnum * phentsize, what, "the program header table")
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for index in range(phnum):
        fields = struct.unpack_from(entry_format, table, index * phentsize)
        if bits == 64:
            p_type, _flags, offset, vaddr, _paddr, filesz = fields[:6]
        else:
            p_type, offset, vaddr, _paddr, filesz = fields[:5]
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC and dynamic is None:
            dynamic = (offset, filesz)
    if dynamic is None:
        return Dynamic(machine=machine, bits=bits)
    if dynamic[1] > MAX_DYNAMIC_BYTES:
        raise ElfError(f"{what}: a dynamic segment of {dynamic[1]} bytes (limit {MAX_DYNAMIC_BYTES})")
    data = _within(read_at, size, dynamic[0], dynamic[1], what, "the dynamic segment")
    return _parse_dynamic(data, read_at, size, loads, order=order, bits=bits, machine=machine, what=what)


def _parse_dynamic(
    data: bytes,
    read_at: ReadAt,
    size: int,
    loads: list[tuple[int, int, int]],
    *,
    order: str,
    bits: int,
    machine: int,
    what: str,
) -> Dynamic:
    entry = order + ("qQ" if bits == 64 else "iI")
    step = struct.calcsize(entry)
    needed: list[int] = []
    tags: dict[int, int] = {}
    for start in range(0, len(data) - step + 1, step):
        tag, value = struct.unpack_from(entry, data, start)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            needed.append(value)
            if len(needed) > MAX_NEEDED:
                raise ElfError(f"{what}: more than {MAX_NEEDED} DT_NEEDED entries")
        elif tag in (DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH):
            tags.setdefault(tag, value)
    wanted = needed + [tags[t] for t in (DT_SONAME, DT_RPATH, DT_RUNPATH) if t in tags]
    if not wanted:
        return Dynamic(machine=machine, bits=bits)
    if DT_STRTAB not in tags:
        raise ElfError(f"{what}: dynamic entries name strings but there is no DT_STRTAB")
    table = _file_offset(tags[DT_STRTAB], loads)
    if table is None:
        raise ElfError(f"{what}: DT_STRTAB {tags[DT_STRTAB]:#x} is in no loaded segment")
    limit = tags.get(DT_STRSZ, size - table)
    strings: dict[int, str] = {}
    for offset in sorted(set(wanted)):  # ascending, so a compressed member is read forward
        strings[offset] = _string(read_at, size, table, limit, offset, what)

    def paths(tag: int) -> tuple[str, ...] | None:
        return None if tag not in tags else tuple(p for p in strings[tags[tag]].split(":") if p)

    return Dynamic(
        needed=tuple(strings[o] for o in needed),
        soname=strings[tags[DT_SONAME]] if DT_SONAME in tags else None,
        runpath=paths(DT_RUNPATH),
        rpath=paths(DT_RPATH),
        machine=machine,
        bits=bits,
    )


def _file_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int | None:
    for start, offset, filesz in loads:
        if start <= vaddr < start + filesz:
            return offset + (vaddr - start)
    return None


def _string(read_at: ReadAt, size: int, table: int, limit: int, offset: int, what: str) -> str:
    if offset >= limit or table + offset >= size:
        raise ElfError(f"{what}: a dynamic string at {offset} is outside the string table")
    raw = read_at(table + offset, min(MAX_STRING, limit - offset, size - table - offset))
    end = raw.find(b"\0")
    if end < 0:
        raise ElfError(f"{what}: a dynamic string at {offset} is not terminated within {MAX_STRING} bytes")
    return raw[:end].decode("utf-8", "replace")


def _within(read_at: ReadAt, size: int, offset: int, length: int, what: str, part: str) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise ElfError(f"{what}: {part} ({length} bytes at {offset}) lies outside the {size}-byte file")
    data = read_at(offset, length)
    if len(data) != length:
        raise ElfError(f"{what}: {part} cut short")
    return data


def dynamic_of_bytes(data: bytes, *, what: str) -> Dynamic | None:
    view = memoryview(data)
    return read_dynamic(lambda offset, length: bytes(view[offset : offset + length]), len(data), what=what)


def dynamic_of_stream(handle: IO[bytes], size: int, *, what: str) -> Dynamic | None:
    """Through a seekable stream (an open file, a zipfile member: seeking back re-inflates from the start,
    so reads are made in ascending order where the layout allows)."""

    def read_at(offset: int, length: int) -> bytes:
        handle.seek(offset)
        return handle.read(length)

    return read_dynamic(read_at, size, what=what)


def is_shared_object_name(name: str) -> bool:
    """The names the loader and Python's importer open: `x.so`, `x.so.1`, `libx-1a2b.so.1.0.0`."""
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base
