"""Is a .pyc the checked-hash byte code of its own source, for the image's Python? (pure)

mlenv's venv step compiles every .py with `py_compile.compile(..., invalidation_mode=CHECKED_HASH)`, so
a good .pyc is: the target minor's magic number, flags 0b11 (hash-based, check_source), and the source
hash that `importlib.util.source_hash` of the target interpreter computes. The hash is computed here
(SipHash keyed by the magic number, as CPython's `_Py_KeyedHash`), so a 3.12 image is checked on a
3.11 host without a 3.12 interpreter.

What the header proves: a checked-hash .pyc is loaded only after the interpreter re-hashes the source
and finds the hash in the header, so the header alone binds the pyc to its source - but only because
the interpreter checks it when loading (check_source, and not with `--check-hash-based-pycs never`).
The code behind the header is NOT bound by the hash: a .pyc whose header is right but whose code was
swapped runs the swapped code. `check_pyc` therefore also compares the code against `compile(source)`
when the host interpreter has the target's minor version (byte code is only comparable within one
minor); on other hosts the code is not checked (`code_comparison` says which comparison is made).
Within one minor, micro releases may differ in line tables: scipy 1.14.0's
_lib/tests/test_warnings.py compiled by 3.11.2 and by 3.11.7 differs in one function's co_linetable,
nothing else (measured on mlenv's fraud image, 6,000 pycs). So unless the host runs the exact target
version, everything but the line tables is compared: swapped code still differs in co_code, co_consts
or co_names; what is not compared is where tracebacks point.

One difference between micro releases is in the code itself, and it changes behaviour: CPython
3.11.0-3.11.3 compile `x, x = a(), b()` without the SWAP before the two stores, so x ends as a() where the
language (and 3.11.4+, python/cpython gh-104615) says b(). Measured: sympy 1.12.1's polys/ring_series.py
(rs_cos: `_, _ = sin(c_expr), cos(c_expr)`) compiled by Debian bookworm's 3.11.2 and by 3.11.7 differs in
rs_cos's co_code (the SWAP) and co_exceptiontable (the offsets after it), nothing else. The old compiler
removes such a SWAP by exchanging the two store instructions it swaps, which 3.11.4 refuses when they, or
a store between them, store one name: for `x, x = a, b` the two are identical and only the SWAP goes, but
for `_, _, last = a, b, c` (sympy 1.13.3's lra_theory.py, LRASolver._pivot) 3.11.2 writes the stores as
last, _, _. A 3.11.4+ host applies the SWAPs its compiler kept as the old one does (`_canonical`), so it
derives a 3.11.0-3.11.3 target's code exactly, and only that code matches (the host's own, with the
SWAP, or the SWAP merely dropped, is a drift for such a target; measured: all 1,517 pyc 3.11.2 writes for
sympy 1.13.3 match). A host before the
fix cannot derive a later target's SWAPs: such a pyc is reported as not comparable (still a drift).

Micro releases also thread jumps differently: 3.11.2 ends a `match` case in a loop with a JUMP_FORWARD to
the loop's JUMP_BACKWARD, 3.11.7 with the JUMP_BACKWARD itself, dropping the other (measured: numpy
2.4.6's lib/_arraypad_impl.py `pad`, a false drift of every bookworm image with that numpy). So across
micro releases the instructions are compared with each jump aimed at the end of its chain of
unconditional jumps and the jumps nothing reaches dropped (`_threaded`): the same behaviour either way.

Every `python` argument is a version string: "3.11" (minor) or "3.11.2" (exact).
"""

from __future__ import annotations

import bisect
import dis
import marshal
import struct
import sys
import types
from collections.abc import Hashable
from typing import Literal

# Magic number (the first two bytes, little-endian; then b"\r\n") of each final CPython release series
# mlenv supports. From importlib.util.MAGIC_NUMBER of each release; tests/verify/test_pyc.py checks
# every entry against an interpreter of that minor where one is installed.
MAGIC: dict[str, int] = {
    "3.8": 3413,
    "3.9": 3425,
    "3.10": 3439,
    "3.11": 3495,
    "3.12": 3531,
    "3.13": 3571,
}

# CPython's _Py_KeyedHash: SipHash-2-4 up to 3.10; 3.11 switched the keyed hash to SipHash-1-3.
_SIPHASH_ROUNDS: dict[str, tuple[int, int]] = {
    "3.8": (2, 4),
    "3.9": (2, 4),
    "3.10": (2, 4),
    "3.11": (1, 3),
    "3.12": (1, 3),
    "3.13": (1, 3),
}

FLAG_HASH_BASED = 0b01
FLAG_CHECK_SOURCE = 0b10
HEADER_SIZE = 16
_MASK = 0xFFFFFFFFFFFFFFFF


def _minor(python: str) -> str:
    return ".".join(python.split(".")[:2])


def magic_number(python: str) -> bytes:
    """The 4-byte magic of the .pyc header for Python `python` ("3.11")."""
    try:
        return MAGIC[_minor(python)].to_bytes(2, "little") + b"\r\n"
    except KeyError:
        raise ValueError(
            f"no pyc magic number known for Python {python} (known: {', '.join(MAGIC)})"
        ) from None


def cache_tag(python: str) -> str:
    """sys.implementation.cache_tag of CPython `python`: "cpython-311"."""
    major, minor = _minor(python).split(".")
    return f"cpython-{major}{minor}"


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash(k0: int, k1: int, data: bytes, *, c_rounds: int, d_rounds: int) -> int:
    """SipHash-c-d of `data` with key (k0, k1), as CPython's pyhash.c computes it (little-endian)."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    full = len(data) - len(data) % 8
    for (m,) in struct.iter_unpack("<Q", data[:full]):
        v3 ^= m
        rounds(c_rounds)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little")
    v3 ^= last
    rounds(c_rounds)
    v0 ^= last
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


def source_hash(source: bytes, *, python: str) -> bytes:
    """importlib.util.source_hash(source) as CPython `python` computes it: the 8 bytes of the header."""
    key = int.from_bytes(magic_number(python), "little")
    c_rounds, d_rounds = _SIPHASH_ROUNDS[_minor(python)]
    return siphash(key, 0, source, c_rounds=c_rounds, d_rounds=d_rounds).to_bytes(8, "little")


CodeComparison = Literal["exact", "without line tables", "none"]
_LINE_TABLES = frozenset({"co_linetable", "co_lnotab"})


def code_comparison(python: str) -> CodeComparison:
    """How this host compares a pyc's code with compile(source) for target Python `python`: "exact"
    when it runs exactly that version, "without line tables" for the same minor (another or an
    unknown micro release), "none" for another minor."""
    host = sys.version_info
    if _minor(python) != f"{host.major}.{host.minor}":
        return "none"
    if python == f"{host.major}.{host.minor}.{host.micro}":
        return "exact"
    return "without line tables"


# gh-104615: the release that stopped reordering the stores of a repeated name (see the module docstring).
_SWAP_FIX = (3, 11, 4)
_STORES = frozenset({"STORE_FAST", "POP_TOP"})
_STORE_RUN = _STORES | {"SWAP", "NOP"}
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_SWAP = dis.opmap.get("SWAP", -1)  # an opcode byte (3.11+); -1 is in no bytes, so older hosts skip
_VARINT_BYTES = 6  # 36 bits: more than any code object's offsets need


SwapFix = Literal["same side", "target before", "target after"]


def _swap_fix_side(python: str) -> SwapFix:
    """Where the exact target `python` ("3.11.2") lies against this host around 3.11.4: "target before"
    when the target predates the fix and the host has it (the host can derive the target's byte code
    exactly: see `_canonical`), "target after" for the reverse (it cannot), else "same side"."""
    parts = python.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or _minor(python) != "3.11":
        return "same side"
    target = (int(parts[0]), int(parts[1]), int(parts[2]))
    host = tuple(sys.version_info[:3])
    if host[:2] != (3, 11) or (target < _SWAP_FIX) == (host < _SWAP_FIX):
        return "same side"
    return "target before" if target < _SWAP_FIX else "target after"


def _exception_table(table: bytes) -> list[tuple[int, int, int, int]]:
    """(start, end, target, depth and lasti) of each entry, in byte offsets: CPython 3.11+'s format, entries
    of four varints (6 bits a byte, most significant first, 0x40 = more bytes follow; code units)."""
    values: list[int] = []
    value = length = 0
    for byte in table:
        value, length = (value << 6) | (byte & 0x3F), length + 1
        if length > _VARINT_BYTES:
            raise ValueError("an exception table value too long")  # untrusted bytes: no huge integers
        if not byte & 0x40:
            values.append(value)
            value = length = 0
    if len(values) % 4:
        raise ValueError("a truncated exception table")
    entries = []
    for at in range(0, len(values), 4):
        start, length, target, depth_lasti = values[at : at + 4]
        entries.append((start * 2, (start + length) * 2, target * 2, depth_lasti))
    return entries


def _has_swap(code: types.CodeType) -> bool:
    """Whether `code` (compiled here: trusted) or a code object in its constants has a SWAP."""
    return _SWAP in code.co_code[::2] or any(
        _has_swap(c) for c in code.co_consts if isinstance(c, types.CodeType)
    )


def _next_swappable(run: list[list[Hashable]], index: int, lineno: object) -> int:
    """CPython 3.11's next_swappable_instruction over one run: the next STORE_FAST/POP_TOP after `index`,
    skipping NOPs, on line `lineno` when it is given (None: any line); -1 when there is none."""
    for at in range(index + 1, len(run)):
        if lineno is not None and run[at][3] != lineno:
            return -1
        if run[at][0] == "NOP":
            continue
        return at if run[at][0] in _STORES else -1
    return -1


def _apply_swaps_before_fix(run: list[list[Hashable]]) -> int:
    """Apply the run's SWAPs to its instructions in place as CPython 3.11.0-3.11.3's apply_static_swaps
    does: from the last SWAP of each group leftwards, SWAP n becomes a NOP and exchanges the next store
    with the (n-1)th store after it (on one line), also when they store one name (3.11.4 stops there,
    gh-104615). A host at or after the fix left exactly those SWAPs, so this gives the old compiler's
    code. Returns how many SWAPs were applied."""
    applied = 0
    groups = [
        i
        for i, item in enumerate(run)
        if item[0] == "SWAP" and (i + 1 == len(run) or run[i + 1][0] != "SWAP")
    ]
    for last in groups:
        for i in range(last, -1, -1):
            if run[i][0] != "SWAP":
                if run[i][0] == "NOP" or run[i][0] in _STORES:
                    continue
                break
            j = _next_swappable(run, i, None)
            if j < 0:
                break
            k = j
            oparg = run[i][1]
            assert isinstance(oparg, int)
            for _ in range(oparg - 1):
                k = _next_swappable(run, k, run[j][3])
                if k < 0:
                    break
            if k < 0:
                break
            run[i] = ["NOP", 0, None, run[i][3]]
            run[j], run[k] = run[k], run[j]
            applied += 1
    return applied


def _canonical(code: types.CodeType, *, old_swaps: bool = True) -> tuple[tuple[Hashable, ...], int] | None:
    """The code's instructions and exception table in a form that two micro releases of one minor write
    alike for the same behaviour, and how many SWAPs were applied. With `old_swaps`, as CPython
    3.11.0-3.11.3 would have written them from the same source (see the module docstring): in each run
    of SWAP/NOP/STORE_FAST/POP_TOP within one basic block, the SWAPs are applied as that compiler applies
    them (`_apply_swaps_before_fix`). Always: the NOPs of such runs are dropped (they do nothing; the old
    compiler removes them too); jumps and handlers name instruction positions (not byte offsets), and
    EXTENDED_ARG prefixes are dropped; jumps are threaded (`_threaded`). None when the code cannot be
    disassembled (untrusted bytes: nothing is run, dis only reads them)."""
    try:
        found = [i for i in dis.get_instructions(code) if i.opname != "EXTENDED_ARG"]
        table = _exception_table(code.co_exceptiontable)
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    tokens: list[list[Hashable]] = []
    position: dict[int, int] = {}
    swaps = 0
    start = 0
    while start < len(found):
        end = start
        # A jump target begins a basic block: a run never spans one (the compiler's never does).
        while (
            end < len(found)
            and found[end].opname in _STORE_RUN
            and (end == start or not found[end].is_jump_target)
        ):
            end += 1
        run = found[start:end]
        if run:  # stores in one token, on both sides, whether the SWAPs were applied or not
            items: list[list[Hashable]] = [
                [i.opname, i.arg or 0, None, i.positions.lineno if i.positions else None] for i in run
            ]
            if old_swaps:
                swaps += _apply_swaps_before_fix(items)
            for instruction in run:
                position[instruction.offset] = len(tokens)
            tokens.append(["stores", tuple((item[0], item[1]) for item in items if item[0] != "NOP")])
            start = end
            continue
        instruction = found[start]
        position[instruction.offset] = len(tokens)
        jump = instruction.argval if instruction.opcode in _JUMPS else None
        tokens.append([instruction.opname, None if jump is not None else instruction.arg, jump])
        start += 1
    offsets = sorted(position)

    def at(offset: object) -> int:
        if not isinstance(offset, int):
            return -1
        after = bisect.bisect_left(offsets, offset)  # a dropped EXTENDED_ARG: the instruction it prefixes
        return position[offsets[after]] if after < len(offsets) else len(tokens)

    for token in tokens:
        if len(token) == 3 and token[2] is not None:
            token[2] = at(token[2])
    handlers: list[list[Hashable]] = [[at(s), at(e), at(t), d] for s, e, t, d in table]
    tokens, handlers = _threaded(tokens, handlers)
    return (*(tuple(t) for t in tokens), tuple(tuple(h) for h in handlers)), swaps


# Unconditional jumps a compiler may thread a jump through. JUMP_BACKWARD_NO_INTERRUPT is left alone: it
# skips the interrupt check the others make, so it is not the same jump.
_THREADABLE = frozenset({"JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_ABSOLUTE"})
# After these, control never reaches the next instruction.
_NO_FALL_THROUGH = _THREADABLE | {"JUMP_BACKWARD_NO_INTERRUPT", "RETURN_VALUE", "RAISE_VARARGS", "RERAISE"}
_DIRECTION = (("_FORWARD", ""), ("_BACKWARD", ""))


def _threaded(
    tokens: list[list[Hashable]], handlers: list[list[Hashable]]
) -> tuple[list[list[Hashable]], list[list[Hashable]]]:
    """The tokens with every jump aimed at the end of its chain of unconditional jumps, and an
    unconditional jump that nothing reaches any more dropped. Micro releases differ here: 3.11.2 leaves
    `JUMP_FORWARD` to a `JUMP_BACKWARD` at the end of a `match` case in a loop, 3.11.7 jumps back at once
    and drops the other (measured: numpy 2.4.6's lib/_arraypad_impl.py, `pad`). Both do the same; the
    direction in a 3.11 jump's name (POP_JUMP_FORWARD_IF_FALSE) follows from its target and is dropped."""

    def end_of_chain(target: Hashable) -> Hashable:
        seen = set()
        while isinstance(target, int) and 0 <= target < len(tokens) and target not in seen:
            seen.add(target)
            if tokens[target][0] not in _THREADABLE:
                break
            target = tokens[target][2]
        return target

    for token in tokens:
        if len(token) == 3 and token[2] is not None:
            token[2] = end_of_chain(token[2])
    aimed_at = {t[2] for t in tokens if len(t) == 3} | {h[2] for h in handlers}
    kept: list[int] = []
    for index, token in enumerate(tokens):
        unreachable = bool(kept) and tokens[kept[-1]][0] in _NO_FALL_THROUGH and index not in aimed_at
        if not (unreachable and token[0] in _THREADABLE):
            kept.append(index)
    new_index = {old: new for new, old in enumerate(kept)}

    def moved(position: Hashable) -> Hashable:
        # A dropped token's position goes to the next kept one (an exception range's end may be one).
        if not isinstance(position, int) or position < 0:
            return position
        after = bisect.bisect_left(kept, position)
        return new_index[kept[after]] if after < len(kept) else len(kept)

    out = []
    for index in kept:
        token = list(tokens[index])
        name = token[0]
        if isinstance(name, str) and "JUMP" in name:
            for marker, replacement in _DIRECTION:
                name = name.replace(marker, replacement)
            token[0] = name
        if len(token) == 3 and token[2] is not None:
            token[2] = moved(token[2])
        out.append(token)
    return out, [[moved(s), moved(e), moved(t), d] for s, e, t, d in handlers]


def _code_difference(
    found: types.CodeType,
    expected: types.CodeType,
    where: str,
    *,
    skip: frozenset[str],
    store_order: list[str] | None = None,
    exact_before_fix: bool = False,
    threading: bool = False,
) -> str | None:
    """The first attribute (not in `skip`) in which two code objects differ, recursively. With
    `threading` (another micro release), code that differs only in how its jumps are threaded
    (`_threaded`) is not a difference. With
    `store_order`, code that differs from this host's compile only by gh-104615 is not a difference
    here, and the names of those code objects are appended to it: exactly the pre-fix compiler's output
    (no SWAP left in those runs) when `exact_before_fix`, else any SWAPs there."""
    if store_order is not None and exact_before_fix:
        # This host's compile keeps SWAPs the target's compiler drops: the target's code is this host's
        # without them, and only that code is the target's (this host's own is not).
        if (
            _SWAP in expected.co_code[::2]
            and (canonical := _canonical(expected)) is not None
            and canonical[1]
        ):
            seen = _canonical(found)
            if seen is None or seen != (canonical[0], 0):
                return f"{where}: co_code differs"
            store_order.append(where)
            skip = skip | {"co_code", "co_exceptiontable"}
    elif (
        store_order is not None
        and (found.co_code, found.co_exceptiontable) != (expected.co_code, expected.co_exceptiontable)
        and (canonical := _canonical(expected)) is not None
        and (seen := _canonical(found)) is not None
        and seen[0] == canonical[0]
    ):
        store_order.append(where)
        skip = skip | {"co_code", "co_exceptiontable"}
    if (
        threading
        and "co_code" not in skip
        and (found.co_code, found.co_exceptiontable) != (expected.co_code, expected.co_exceptiontable)
        and (seen := _canonical(found, old_swaps=False)) is not None
        and seen == _canonical(expected, old_swaps=False)
    ):
        skip = skip | {"co_code", "co_exceptiontable"}  # the same instructions, jumps threaded otherwise
    for attr in (
        "co_name",
        "co_qualname",
        "co_filename",
        "co_firstlineno",
        "co_argcount",
        "co_posonlyargcount",
        "co_kwonlyargcount",
        "co_flags",
        "co_stacksize",
        "co_code",
        "co_names",
        "co_varnames",
        "co_freevars",
        "co_cellvars",
        "co_linetable",
        "co_exceptiontable",
    ):
        if attr in skip or not hasattr(expected, attr):
            continue
        if getattr(found, attr, None) != getattr(expected, attr):
            return f"{where}: {attr} differs"
    if len(found.co_consts) != len(expected.co_consts):
        return f"{where}: co_consts differs"
    for i, (f, e) in enumerate(zip(found.co_consts, expected.co_consts, strict=True)):
        if isinstance(e, types.CodeType):
            if not isinstance(f, types.CodeType):
                return f"{where}: constant {i} is not code"
            reason = _code_difference(
                f,
                e,
                f"{where}.{e.co_name}",
                skip=skip,
                store_order=store_order,
                exact_before_fix=exact_before_fix,
                threading=threading,
            )
            if reason:
                return reason
        elif type(f) is not type(e) or f != e:
            # type() first: 1 == 1.0 == True, but they are different constants
            return f"{where}: constant {i} differs"
    return None


def check_pyc(pyc: bytes, source: bytes, *, python: str, source_path: str | None = None) -> str | None:
    """None if `pyc` is the CHECKED_HASH .pyc of `source` for CPython `python` ("3.11"), else why not.

    Checked: the magic number of that minor, flags == 0b11 (an unchecked-hash pyc, flags 0b01, is never
    validated against its source by the interpreter; a timestamp pyc, flags 0, is validated only by
    mtime and size, which anyone can set), and the source hash. The hash binds the pyc to the source
    only because the interpreter checks it on load (check_source); it says nothing about the code that
    follows the header. So when the host runs the same minor as the target, the code is also compared
    with what `compile(source)` gives (py_compile's output for one interpreter and optimization level
    is deterministic): exactly when `python` names the host's exact version ("3.11.7"), else without
    the line tables (`code_comparison`; see the module docstring). Give `source_path` (the .py's
    absolute path in the image, which py_compile stores as co_filename) to have the file name compared
    too. `pyc` is untrusted input: it is unmarshalled only after its header has matched.
    """
    try:
        magic = magic_number(python)
    except ValueError as e:
        return str(e)
    if len(pyc) < HEADER_SIZE:
        return f"truncated: {len(pyc)} bytes, shorter than the 16-byte header"
    if pyc[:4] != magic:
        known = {m.to_bytes(2, "little") + b"\r\n": v for v, m in MAGIC.items()}
        other = known.get(pyc[:4])
        what = f"Python {other}'s" if other else f"unknown ({pyc[:4].hex()})"
        return f"magic number is {what}, not Python {python}'s ({magic.hex()})"
    flags = int.from_bytes(pyc[4:8], "little")
    if flags == 0:
        return "a timestamp pyc (flags 0), not a checked-hash one: the interpreter trusts its mtime and size"
    if flags == FLAG_HASH_BASED:
        return "an unchecked-hash pyc (flags 0b01): the interpreter never compares it with its source"
    if flags != FLAG_HASH_BASED | FLAG_CHECK_SOURCE:
        return f"invalid pyc flags {flags:#b} (a checked-hash pyc has 0b11)"
    expected_hash = source_hash(source, python=python)
    if pyc[8:16] != expected_hash:
        return f"source hash {pyc[8:16].hex()} is not that of its source ({expected_hash.hex()})"
    comparison = code_comparison(python)
    if comparison == "none":
        return None
    try:
        expected = compile(source, source_path or "<source>", "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError) as e:
        return f"its source does not compile ({e.__class__.__name__}), so no pyc should exist"
    body = pyc[HEADER_SIZE:]
    side = _swap_fix_side(python) if comparison == "without line tables" else "same side"
    # This host's own bytes are the target's unless the target predates gh-104615 and they hold a SWAP
    # (cheap to rule out: SWAP is in few code objects).
    if body == marshal.dumps(expected) and (side != "target before" or not _has_swap(expected)):
        return None
    skip = _LINE_TABLES if comparison == "without line tables" else frozenset()
    # marshal output can differ by reference flags (object refcounts at dump time) for equal code,
    # so unequal bytes are decided by comparing the code objects.
    try:
        found = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return "its code does not unmarshal"
    if not isinstance(found, types.CodeType):
        return f"it holds a {type(found).__name__}, not a code object"
    if source_path is None:
        # without the image path, file names are not part of the comparison
        found, expected = _strip_filenames(found), _strip_filenames(expected)
    store_order: list[str] | None = [] if side != "same side" else None
    reason = _code_difference(
        found,
        expected,
        "<module>",
        skip=skip,
        store_order=store_order,
        exact_before_fix=side == "target before",
        threading=comparison == "without line tables",
    )
    if reason:
        return f"its code is not what its source compiles to ({reason})"
    # A target before the fix: the host derived that release's code exactly (`_canonical`), so it matched.
    if store_order and side == "target after":
        host = ".".join(str(n) for n in sys.version_info[:3])
        return (
            f"not comparable: byte code of another micro release: {', '.join(store_order)} differs from "
            f"this host's Python {host} compile only in the order of two stores to one name (`x, x = a, b`), "
            "which Python 3.11.0-3.11.3 reverse (CPython gh-104615, a change of behaviour); only a host "
            f"that runs Python {python} can tell whether it is that release's byte code of its source"
        )
    return None


def _strip_filenames(code: types.CodeType) -> types.CodeType:
    consts = tuple(_strip_filenames(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename="<source>", co_consts=consts)
