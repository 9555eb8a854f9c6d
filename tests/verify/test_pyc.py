"""check_pyc: a .pyc must be the CHECKED_HASH pyc of its own source for the image's Python."""

from __future__ import annotations

import dis
import importlib.util
import json
import marshal
import py_compile
import random
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mlenv.verify.pyc import MAGIC, check_pyc, code_comparison, magic_number, source_hash
from tests.verify.venvtree import Interpreter, interpreters

HOST = f"{sys.version_info.major}.{sys.version_info.minor}"
EXACT = f"{HOST}.{sys.version_info.micro}"
SOURCE = (
    b"import os\n\ndef f(x, *, y=1.5):\n    return [x + y for _ in range(3)], os.sep\n\nclass C:\n    z = f\n"
)
OTHER = b"import os\n\ndef f(x, *, y=1.5):\n    return os.system('id')\n\nclass C:\n    z = f\n"


def _inputs() -> list[bytes]:
    rng = random.Random(13)
    out = [b"", b"\x00", SOURCE, OTHER, b"x" * 1001]
    out += [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 70)]
    out += [rng.randbytes(rng.randrange(1, 5000)) for _ in range(200)]
    return out


def test_source_hash_is_importlibs_for_many_inputs() -> None:
    for data in _inputs():
        assert source_hash(data, python=HOST) == importlib.util.source_hash(data)
    assert magic_number(HOST) == importlib.util.MAGIC_NUMBER


@pytest.mark.parametrize("python", interpreters(), ids=lambda i: i.minor)
def test_magic_and_source_hash_match_each_installed_interpreter(python: Interpreter) -> None:
    """Every minor with an interpreter on this host: its MAGIC_NUMBER and source_hash, computed here."""
    inputs = _inputs()
    probe = (
        "import importlib.util as u, json, sys; data = [bytes.fromhex(h) for h in json.load(sys.stdin)]; "
        "print(json.dumps([u.MAGIC_NUMBER.hex(), [u.source_hash(d).hex() for d in data]]))"
    )
    out = subprocess.run(
        [python.executable, "-c", probe],
        input=json.dumps([d.hex() for d in inputs]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    magic, hashes = json.loads(out)
    assert magic_number(python.minor).hex() == magic
    assert [source_hash(d, python=python.minor).hex() for d in inputs] == hashes


def test_the_table_covers_the_supported_minors() -> None:
    assert {"3.8", "3.9", "3.10", "3.11", "3.12", "3.13"} <= set(MAGIC)


def _compiled(tmp_path: Path, source: bytes, mode: py_compile.PycInvalidationMode) -> tuple[bytes, str]:
    src = tmp_path / "mod.py"
    src.write_bytes(source)
    cfile = tmp_path / "mod.pyc"
    py_compile.compile(str(src), cfile=str(cfile), doraise=True, invalidation_mode=mode)
    return cfile.read_bytes(), str(src)


def test_a_checked_hash_pyc_of_its_source_is_good(tmp_path: Path) -> None:
    pyc, path = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.CHECKED_HASH)
    assert check_pyc(pyc, SOURCE, python=HOST, source_path=path) is None
    assert check_pyc(pyc, SOURCE, python=HOST) is None


def test_a_timestamp_pyc_is_refused(tmp_path: Path) -> None:
    pyc, path = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.TIMESTAMP)
    assert check_pyc(pyc, SOURCE, python=HOST, source_path=path) == (
        "a timestamp pyc (flags 0), not a checked-hash one: the interpreter trusts its mtime and size"
    )


def test_an_unchecked_hash_pyc_is_refused(tmp_path: Path) -> None:
    pyc, path = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert check_pyc(pyc, SOURCE, python=HOST, source_path=path) == (
        "an unchecked-hash pyc (flags 0b01): the interpreter never compares it with its source"
    )


def test_a_pyc_of_another_source_is_refused(tmp_path: Path) -> None:
    pyc, path = _compiled(tmp_path, OTHER, py_compile.PycInvalidationMode.CHECKED_HASH)
    reason = check_pyc(pyc, SOURCE, python=HOST, source_path=path)
    assert reason == (
        f"source hash {pyc[8:16].hex()} is not that of its source ({source_hash(SOURCE, python=HOST).hex()})"
    )


def test_a_pyc_for_another_minor_is_refused(tmp_path: Path) -> None:
    pyc, path = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.CHECKED_HASH)
    other = "3.12" if HOST != "3.12" else "3.11"
    assert check_pyc(pyc, SOURCE, python=other, source_path=path) == (
        f"magic number is Python {HOST}'s, not Python {other}'s ({magic_number(other).hex()})"
    )
    forged = b"\x00\x00\r\n" + pyc[4:]
    assert check_pyc(forged, SOURCE, python=HOST) == (
        f"magic number is unknown (00000d0a), not Python {HOST}'s ({magic_number(HOST).hex()})"
    )


def test_swapped_code_behind_a_right_header_is_caught(tmp_path: Path) -> None:
    """The header of SOURCE's pyc, the code of OTHER: what an attacker who keeps the .py would ship."""
    pyc, path = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.CHECKED_HASH)
    swapped = pyc[:16] + marshal.dumps(compile(OTHER, path, "exec", dont_inherit=True))
    assert code_comparison(HOST) == "without line tables"
    assert code_comparison(EXACT) == "exact"
    reason = check_pyc(swapped, SOURCE, python=HOST, source_path=path)
    assert reason is not None and reason.startswith("its code is not what its source compiles to (")
    reason = check_pyc(swapped, SOURCE, python=HOST)
    assert reason is not None and reason.startswith("its code is not what its source compiles to (")
    # one constant changed, inside a function: found in the nested code object
    nested = pyc[:16] + marshal.dumps(
        compile(SOURCE.replace(b"(3)", b"(4)"), path, "exec", dont_inherit=True)
    )
    reason = check_pyc(nested, SOURCE, python=HOST, source_path=path)
    assert reason is not None
    assert re.fullmatch(
        r"its code is not what its source compiles to \(<module>\.f: constant \d+ differs\)", reason
    )
    # the code compiled for another file name (co_filename is part of what py_compile wrote)
    moved = pyc[:16] + marshal.dumps(compile(SOURCE, "/elsewhere.py", "exec", dont_inherit=True))
    assert check_pyc(moved, SOURCE, python=HOST, source_path=path) == (
        "its code is not what its source compiles to (<module>: co_filename differs)"
    )
    assert check_pyc(moved, SOURCE, python=HOST) is None  # no path given: file names not compared


def test_line_tables_are_compared_only_for_the_exact_host_version(tmp_path: Path) -> None:
    """Micro releases of one minor may write other line tables for the same source (3.11.2 and 3.11.7
    do for one scipy function): compared only when the target is exactly the host's version."""
    source = b"def f(x):\n    return (x + 1)\n"
    pyc, path = _compiled(tmp_path, source, py_compile.PycInvalidationMode.CHECKED_HASH)
    columns = pyc[:16] + marshal.dumps(
        compile(b"def f(x):\n    return (x  + 1)\n", path, "exec", dont_inherit=True)
    )
    assert check_pyc(columns, source, python=EXACT, source_path=path) == (
        "its code is not what its source compiles to (<module>: co_linetable differs)"
    )
    assert check_pyc(columns, source, python=HOST, source_path=path) is None
    assert check_pyc(columns, source, python=f"{HOST}.999", source_path=path) is None
    assert check_pyc(pyc, source, python=EXACT, source_path=path) is None


def test_garbage_behind_the_header_is_caught(tmp_path: Path) -> None:
    pyc, path = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.CHECKED_HASH)
    assert check_pyc(pyc[:16] + b"\xff\x00", SOURCE, python=HOST, source_path=path) == (
        "its code does not unmarshal"
    )
    assert check_pyc(pyc[:16] + marshal.dumps(42), SOURCE, python=HOST) == (
        "it holds a int, not a code object"
    )
    assert check_pyc(pyc[:10], SOURCE, python=HOST) == "truncated: 10 bytes, shorter than the 16-byte header"
    flags = pyc[:4] + (0b111).to_bytes(4, "little") + pyc[8:]
    assert check_pyc(flags, SOURCE, python=HOST) == "invalid pyc flags 0b111 (a checked-hash pyc has 0b11)"


def test_a_pyc_for_a_source_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    bad = b"def (:\n"
    pyc, _ = _compiled(tmp_path, SOURCE, py_compile.PycInvalidationMode.CHECKED_HASH)
    forged = pyc[:8] + source_hash(bad, python=HOST) + pyc[16:]
    assert check_pyc(forged, bad, python=HOST) == (
        "its source does not compile (SyntaxError), so no pyc should exist"
    )


@pytest.mark.parametrize("python", interpreters(), ids=lambda i: i.minor)
def test_pycs_written_by_each_installed_interpreter(python: Interpreter, tmp_path: Path) -> None:
    """A checked-hash pyc made by CPython X.Y passes for X.Y (header only when the host is another minor)
    and fails for every other minor; its timestamp pyc fails."""
    src = tmp_path / "mod.py"
    src.write_bytes(SOURCE)
    for mode, name in (("CHECKED_HASH", "checked.pyc"), ("TIMESTAMP", "stamp.pyc")):
        script = (
            "import py_compile as c, sys; c.compile(sys.argv[1], cfile=sys.argv[2], doraise=True, "
            f"invalidation_mode=c.PycInvalidationMode.{mode})"
        )
        subprocess.run([python.executable, "-c", script, str(src), str(tmp_path / name)], check=True)
    checked = (tmp_path / "checked.pyc").read_bytes()
    assert check_pyc(checked, SOURCE, python=python.minor, source_path=str(src)) is None
    assert check_pyc(checked, OTHER, python=python.minor, source_path=str(src)) is not None
    for other in MAGIC:
        if other != python.minor:
            assert check_pyc(checked, SOURCE, python=other) is not None
    stamp = (tmp_path / "stamp.pyc").read_bytes()
    assert check_pyc(stamp, SOURCE, python=python.minor) is not None


FIXTURES = Path(__file__).parent / "pyc_fixtures"
SWAPS_PATH = "/opt/venv/lib/python3.11/site-packages/swaps.py"
AFTER_THE_SWAP_FIX = sys.version_info[:2] == (3, 11) and sys.version_info >= (3, 11, 4)


@pytest.mark.skipif(not AFTER_THE_SWAP_FIX, reason="the recorded case needs a host CPython 3.11.4 or later")
def test_byte_code_of_3_11_2_is_derived_exactly_on_a_later_3_11_host() -> None:
    """3.11.2's pyc (recorded, see pyc_fixtures/README.md) differs from this host's compile() in co_code
    where gh-104615 changed the compiler. The host derives 3.11.2's code from its own exactly (its SWAPs
    applied as 3.11.2 applies them: here the SWAP before two stores to one name dropped), so for a
    3.11.2 image it is its source's byte code; for an image that says it runs this host's release, or
    any after the fix, it is not; and this host's own compile is not 3.11.2's byte code."""
    source = (FIXTURES / "swaps.py").read_bytes()
    pyc = (FIXTURES / "swaps.cpython-311-3.11.2.pyc").read_bytes()
    host = ".".join(str(n) for n in sys.version_info[:3])
    compiled = compile(source, SWAPS_PATH, "exec", dont_inherit=True)
    assert pyc[16:] != marshal.dumps(compiled)
    assert check_pyc(pyc, source, python="3.11.2", source_path=SWAPS_PATH) is None
    for python in (host, "3.11.4"):
        assert check_pyc(pyc, source, python=python, source_path=SWAPS_PATH) == (
            "its code is not what its source compiles to (<module>.pair: co_code differs)"
        )
    # The host's byte code (with the SWAP) under 3.11.2's header: not what 3.11.2 writes, and it behaves
    # otherwise (pair returns second()'s value), so it is a drift.
    with_swap = pyc[:16] + marshal.dumps(compiled)
    assert check_pyc(with_swap, source, python="3.11.2", source_path=SWAPS_PATH) == (
        "its code is not what its source compiles to (<module>.pair: co_code differs)"
    )


@pytest.mark.skipif(not AFTER_THE_SWAP_FIX, reason="the recorded case needs a host CPython 3.11.4 or later")
def test_other_code_behind_3_11_2s_header_is_still_foreign_code() -> None:
    """The recorded 3.11.2 header with swapped code: the gh-104615 allowance explains no other change."""
    source = (FIXTURES / "swaps.py").read_bytes()
    header = (FIXTURES / "swaps.cpython-311-3.11.2.pyc").read_bytes()[:16]
    for other in (
        source.replace(b"return _", b"return first"),  # another name loaded
        source.replace(b"_, _ = first(), second()", b"_, _ = second(), first()"),  # the calls swapped
        source.replace(b"_, _ = first(), second()", b"_, a = first(), second()"),  # no repeated name
    ):
        swapped = header + marshal.dumps(compile(other, SWAPS_PATH, "exec", dont_inherit=True))
        reason = check_pyc(swapped, source, python="3.11.2", source_path=SWAPS_PATH)
        assert reason is not None and reason.startswith("its code is not what its source compiles to ("), (
            other,
            reason,
        )
    # Extra code beside the tolerated statement is found too, in its own code object.
    extra = source + b"\n\ndef run():\n    return __import__('os').system('id')\n"
    swapped = header + marshal.dumps(compile(extra, SWAPS_PATH, "exec", dont_inherit=True))
    reason = check_pyc(swapped, source, python="3.11.2", source_path=SWAPS_PATH)
    assert reason is not None and reason.startswith("its code is not what its source compiles to (")


THREE_PATH = "/opt/venv/lib/python3.11/site-packages/three.py"


@pytest.mark.skipif(not AFTER_THE_SWAP_FIX, reason="the recorded case needs a host CPython 3.11.4 or later")
def test_the_old_compiler_exchanges_the_stores_it_swaps() -> None:
    """`_, _, last = ...` (recorded 3.11.2 pyc, see pyc_fixtures/README.md): 3.11.2 exchanged the first
    store with the third, so dropping the SWAP alone is not its code. Its real pyc matches a 3.11.2
    image; the host's code with the SWAP turned into a NOP (stores left in the host's order: `three`
    would return ('y', 'x'), which no compiler writes) is a drift, as is the host's own code."""
    source = (FIXTURES / "three.py").read_bytes()
    pyc = (FIXTURES / "three.cpython-311-3.11.2.pyc").read_bytes()
    assert check_pyc(pyc, source, python="3.11.2", source_path=THREE_PATH) is None
    compiled = compile(source, THREE_PATH, "exec", dont_inherit=True)
    function = next(c for c in compiled.co_consts if isinstance(c, types.CodeType))
    code = bytearray(function.co_code)
    swap = next(at for at in range(0, len(code), 2) if code[at] == dis.opmap["SWAP"])
    code[swap : swap + 2] = bytes([dis.opmap["NOP"], 0])
    nop = compiled.replace(
        co_consts=tuple(
            function.replace(co_code=bytes(code)) if c is function else c for c in compiled.co_consts
        )
    )
    for forged in (nop, compiled):
        assert check_pyc(
            pyc[:16] + marshal.dumps(forged), source, python="3.11.2", source_path=THREE_PATH
        ) == ("its code is not what its source compiles to (<module>.three: co_code differs)")


JUMPS_PATH = "/opt/venv/lib/python3.11/site-packages/jumps.py"
# Measured on 3.11.7: it threads the jump at the end of a `match` case in a loop that 3.11.2 leaves.
JUMPS_THREADED = sys.version_info[:2] == (3, 11) and sys.version_info >= (3, 11, 7)


def _pad_code(pyc: bytes) -> tuple[types.CodeType, types.CodeType]:
    module = marshal.loads(pyc[16:])
    return module, next(c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == "pad")


def _with_pad_code(pyc: bytes, co_code: bytes) -> bytes:
    module, pad = _pad_code(pyc)
    consts = tuple(pad.replace(co_code=co_code) if c is pad else c for c in module.co_consts)
    return pyc[:16] + marshal.dumps(module.replace(co_consts=consts))


@pytest.mark.skipif(not JUMPS_THREADED, reason="the recorded case needs a host CPython 3.11.7 or later")
def test_jumps_another_micro_release_threads_otherwise_are_still_its_sources_byte_code() -> None:
    """3.11.2's pyc for a `match` in a loop (recorded, see pyc_fixtures/README.md; numpy 2.4.6's `pad`
    has it, so a bookworm image with numpy was a false drift) ends a case with a JUMP_FORWARD to the
    loop's JUMP_BACKWARD, where this host jumps back at once and drops the other jump. Same behaviour:
    it is its source's byte code for a 3.11.2 image, but not for an image that says it runs this
    host's exact release, whose compiler writes the other code."""
    source = (FIXTURES / "jumps.py").read_bytes()
    pyc = (FIXTURES / "jumps.cpython-311-3.11.2.pyc").read_bytes()
    assert pyc[16:] != marshal.dumps(compile(source, JUMPS_PATH, "exec", dont_inherit=True))
    assert check_pyc(pyc, source, python="3.11.2", source_path=JUMPS_PATH) is None
    host = ".".join(str(n) for n in sys.version_info[:3])
    assert check_pyc(pyc, source, python=host, source_path=JUMPS_PATH) == (
        "its code is not what its source compiles to (<module>.pad: co_code differs)"
    )


@pytest.mark.skipif(not JUMPS_THREADED, reason="the recorded case needs a host CPython 3.11.7 or later")
def test_other_jumps_behind_3_11_2s_header_are_foreign_code() -> None:
    """The jump-threading allowance explains no other change: other code behind the recorded header, a
    jump of 3.11.2's code aimed elsewhere, a jump to itself (which must not hang the check), and a jump
    to the loop's head where 3.11.2 aimed at a jump there (the same behaviour, so accepted)."""
    source = (FIXTURES / "jumps.py").read_bytes()
    pyc = (FIXTURES / "jumps.cpython-311-3.11.2.pyc").read_bytes()
    foreign = "its code is not what its source compiles to (<module>.pad: co_code differs)"
    for other in (
        source.replace(b"seq[axis] = before, after", b"seq[axis] = after, before"),
        source.replace(b"typing.assert_never(invalid)", b"__import__('os').system('id')"),
    ):
        swapped = pyc[:16] + marshal.dumps(compile(other, JUMPS_PATH, "exec", dont_inherit=True))
        reason = check_pyc(swapped, source, python="3.11.2", source_path=JUMPS_PATH)
        assert reason is not None and reason.startswith("its code is not what its source compiles to ("), (
            reason
        )
    _, pad = _pad_code(pyc)
    code = bytearray(pad.co_code)
    jump = next(at for at in range(0, len(code), 2) if code[at] == dis.opmap["JUMP_FORWARD"] and code[at + 1])
    # Aimed at the next instruction: the case falls into the next one's code. (One instruction short
    # would be no change: that is the other JUMP_BACKWARD to the loop's head, and it is accepted.)
    code[jump + 1] = 0
    assert (
        check_pyc(_with_pad_code(pyc, bytes(code)), source, python="3.11.2", source_path=JUMPS_PATH)
        == foreign
    )
    code = bytearray(pad.co_code)
    code[jump + 1] -= 1
    assert (
        check_pyc(_with_pad_code(pyc, bytes(code)), source, python="3.11.2", source_path=JUMPS_PATH) is None
    )
    code = bytearray(pad.co_code)
    code[jump : jump + 2] = bytes([dis.opmap["JUMP_BACKWARD"], 1])  # aimed at itself
    assert (
        check_pyc(_with_pad_code(pyc, bytes(code)), source, python="3.11.2", source_path=JUMPS_PATH)
        == foreign
    )
