"""A pickle stream walked opcode by opcode, never executed: what it imports and what it says about itself.

Unpickling runs whatever the file names (`os.system` through REDUCE), so the reader interprets the
opcodes on a symbolic stack instead: globals become `Global` values, calls become `Obj` values, and
only what the facts need is kept (short strings, small tuples, the few dict keys looked up later).
That keeps memory proportional to the stack and the memo, never to the file: a multi-GB model is
mostly array bytes, skipped as they stream past.

joblib writes each numpy array's raw bytes into the stream right after the BUILD of its
NumpyArrayWrapper (the wrapper's state says the shape, dtype and order: how many bytes to skip);
an object array is a whole nested pickle there instead. `walk` follows both, as joblib's loader does.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import pickletools
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from mlenv.observe.models.formats import ubj_version_in_tail
from mlenv.observe.stream.decompress import ChunkReader

# A string is kept (for memo lookups, dict keys, global names) up to this many bytes; a longer one is
# data (protocol 2 numpy arrays are latin-1 strings of their bytes), skipped as it streams past.
MAX_KEPT_STRING = 4096
# Stack and memo sizes: a real model's stack is its nesting depth plus one batch of 1000 items, its memo
# one entry per distinct string or object (a 1M-word vectorizer vocabulary is ~1M). Measured at these
# limits (tests/observe/models/test_hostile.py): 2M memoized 30-character strings peak near 200 MiB.
MAX_STACK = 1_000_000
MAX_MEMO = 2_000_000
# PUT indices out of sequence (no pickler writes them): kept apart, in a dict, and fewer.
MAX_SPARSE_MEMO = 100_000
# Strings and bytes kept in all: a million-word vocabulary is ~10 MB; past this budget a string is a
# Blob (its tail only), so a memo of millions of long strings cannot fill memory.
MAX_KEPT_BYTES = 64 << 20
# Tuples, dicts and calls made while walking: each is ~100 bytes while reachable. The largest real
# models (a forest of thousands of trees, a vocabulary of a million words) make a few million; a
# crafted flood of objects is refused here rather than grown into gigabytes.
MAX_OBJECTS = 2_000_000
# Distinct globals one file imports: models import tens; each name kept costs ~150 bytes.
MAX_GLOBALS = 100_000
# The last bytes kept of a long bytes value: XGBoost's UBJSON ends with its `version` array.
BLOB_TAIL = 64
# Tuples longer than this are data (not a shape, a dtype's arguments or a reduce's arguments).
MAX_KEPT_TUPLE = 32
# A text-protocol argument (protocol 0 lines): longer lines are data, skipped.
MAX_LINE = 1 << 16
# Nested pickles (joblib's object arrays) inside nested pickles: joblib writes one level.
MAX_NESTING = 4
# An array's declared size: joblib arrays are at most tens of GiB; a bigger one is a crafted header.
MAX_ARRAY_BYTES = 1 << 40

# The dict keys `walk` looks up in BUILD states; every other key's value is dropped.
KEPT_KEYS = frozenset(
    {
        "_sklearn_version",
        "shape",
        "dtype",
        "order",
        "numpy_array_alignment_bytes",
        "subclass",
        "handle",  # an XGBoost Booster's serialized model
    }
)

_NUMPY_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_DTYPE_SIZE = re.compile(r"[<>|=]?[a-zA-Z]+(\d+)")


class PickleError(Exception):
    """The stream is not a pickle a loader would read (truncated, unknown opcode, malformed)."""


@dataclass(frozen=True, kw_only=True)
class Global:
    module: str
    name: str


class Obj:
    """The result of a call (REDUCE, NEWOBJ, INST, OBJ): what was called, on what, and its BUILD state."""

    __slots__ = ("callee", "args", "state")

    def __init__(self, callee: object, args: object) -> None:
        self.callee = callee
        self.args = args
        self.state: object = None

    def cls(self) -> Global | None:
        # copyreg._reconstructor(cls, base, state) is how protocols 0 and 1 make an instance of cls.
        if self.callee == Global(module="copyreg", name="_reconstructor") and isinstance(self.args, tuple):
            first = self.args[0] if self.args else None
            return first if isinstance(first, Global) else None
        return self.callee if isinstance(self.callee, Global) else None


class Dict:
    """A dict, keeping only the entries whose key `walk` looks up."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, object] | None = None  # made on the first kept key: most dicts have none

    @property
    def kept(self) -> dict[str, object]:
        return self.entries or {}

    def set(self, key: object, value: object) -> None:
        if isinstance(key, str) and key in KEPT_KEYS:
            if self.entries is None:
                self.entries = {}
            self.entries[key] = value


class Blob:
    """A string or bytes too long to keep (a serialized booster, raw weights): only their last
    BLOB_TAIL bytes (UTF-8 for a string), where XGBoost's serialization puts its version."""

    __slots__ = ("tail", "text")

    def __init__(self, tail: bytes, *, text: bool) -> None:
        self.tail = tail
        self.text = text

    def latin1_tail(self) -> bytes:
        """The last bytes of the data a latin-1 string stands for (protocol 2 writes bytes so)."""
        if not self.text:
            return self.tail
        # The tail may start inside a UTF-8 sequence: drop the partial character.
        return self.tail.decode("utf-8", "ignore").encode("latin-1", "ignore")


class _Opaque:
    """Any value the facts never look into (lists, sets, long strings, numbers as data)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE = _Opaque()
_MARK = object()


@dataclass(kw_only=True)
class PickleFacts:
    """What one walk found (mutable while walking; read_model turns it into ModelFacts)."""

    globals: set[tuple[str, str]] = field(default_factory=set)  # (module, name) of every import
    # The `_sklearn_version` of each estimator state that records one.
    sklearn_versions: set[str] = field(default_factory=set)
    versioned_states: int = 0  # BUILD states that carry a `_sklearn_version`
    # Versions other libraries record in their estimators' state (XGBoost's Booster): PyPI name -> versions.
    library_versions: dict[str, set[str]] = field(default_factory=dict)
    arrays: int = 0  # joblib NumpyArrayWrapper arrays skipped
    array_bytes: int = 0
    persistent_ids: int = 0  # torch's data.pkl names its storages by persistent id
    objects: int = 0  # tuples, dicts and calls made (MAX_OBJECTS)
    kept_bytes: int = 0  # of strings and bytes kept (MAX_KEPT_BYTES)
    pickles: int = 0  # streams walked (a joblib file with object arrays holds nested ones)
    protocol: int | None = None  # the outermost stream's PROTO (None for protocols 0 and 1)


def _read_exact(reader: ChunkReader, size: int, what: str) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise PickleError(f"truncated pickle: {what} at byte {reader.offset} ends early")
    return data


def _skip_exact(reader: ChunkReader, size: int, what: str) -> None:
    if reader.skip(size) != size:
        raise PickleError(f"truncated pickle: {what} at byte {reader.offset} ends early")


def _line(reader: ChunkReader) -> bytes | None:
    """A protocol-0 argument line without its newline; None when longer than MAX_LINE (skipped)."""
    parts: list[bytes] = []
    have = 0
    while True:
        chunk = reader.peek(4096)
        if not chunk:
            raise PickleError(f"truncated pickle: a text argument at byte {reader.offset} has no newline")
        end = chunk.find(b"\n")
        take = len(chunk) if end < 0 else end + 1
        data = reader.read(take)
        if have <= MAX_LINE:
            parts.append(data)
        have += take
        if end >= 0:
            break
    if have - 1 > MAX_LINE:
        return None
    return b"".join(parts)[:-1]


def _text(data: bytes | None, what: str) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PickleError(f"{what} is not UTF-8") from None


def _sized_string(reader: ChunkReader, size: int, what: str, *, text: bool, facts: PickleFacts) -> object:
    """A length-prefixed string or bytes argument: kept when short; when data, skipped (OPAQUE for
    text, a Blob of its last bytes for bytes)."""
    if size > MAX_KEPT_STRING or facts.kept_bytes + size > MAX_KEPT_BYTES:
        tail = b""
        seen = 0
        for view in reader.views(size):
            seen += len(view)
            tail = (tail + bytes(view[-BLOB_TAIL:]))[-BLOB_TAIL:]
        if seen != size:
            raise PickleError(f"truncated pickle: {what} at byte {reader.offset} ends early")
        return Blob(tail, text=text)
    data = _read_exact(reader, size, what)
    facts.kept_bytes += size
    if not text:
        return data
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise PickleError(f"{what} at byte {reader.offset} is not UTF-8") from None


def _py2_string(data: bytes) -> object:
    # Python 2 str: unpickled as ASCII text by default; anything else stays data.
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return OPAQUE


def _unquote(line: bytes | None) -> object:
    # STRING's argument is a quoted repr ('abc' or "abc"); only simple ones matter (dtype strings).
    if line is None or len(line) < 2 or line[:1] not in (b"'", b'"') or line[-1:] != line[:1]:
        return OPAQUE
    body = line[1:-1]
    return OPAQUE if b"\\" in body else _py2_string(body)


def _dtype_itemsize(dtype: object) -> tuple[int, bool]:
    """(bytes per element, holds Python objects) of a pickled numpy.dtype, or PickleError."""
    if not (isinstance(dtype, Obj) and dtype.cls() == Global(module="numpy", name="dtype")):
        raise PickleError("a joblib array wrapper's dtype is not a numpy dtype")
    args, state = dtype.args, dtype.state
    if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
        raise PickleError("a joblib array wrapper's dtype has no type string")
    # dtype.__reduce__'s state: (version, byteorder, subarray, names, fields, elsize, alignment, flags);
    # flags bit 0 is NPY_ITEM_REFCOUNT (holds objects), elsize is set for flexible and structured types.
    if isinstance(state, tuple) and len(state) >= 8:
        elsize, flags = state[5], state[7]
        objects = isinstance(flags, int) and bool(flags & 1)
        if isinstance(elsize, int) and elsize > 0:
            return elsize, objects
        if objects:
            return 8, True
    typestr = args[0]
    if typestr.lstrip("<>|=").startswith("O"):
        return 8, True
    match = _DTYPE_SIZE.fullmatch(typestr)
    if match is None:
        raise PickleError(f"a joblib array wrapper's dtype {typestr[:40]!r} has no size")
    return int(match.group(1)), False


class _Walker:
    def __init__(self, reader: ChunkReader, facts: PickleFacts, *, joblib: bool, depth: int) -> None:
        self.reader = reader
        self.facts = facts
        self.joblib = joblib
        self.depth = depth
        self.stack: list[object] = []
        self.marks: list[int] = []
        # The memo as picklers write it, index by index (8 bytes a slot), and PUTs out of sequence.
        self.memo: list[object] = []
        self.sparse: dict[int, object] = {}
        self.protocol = 0  # this stream's PROTO; below 3 the loader maps Python 2 names (fix_imports)

    # -- stack helpers ------------------------------------------------------------------------------

    def push(self, value: object) -> None:
        if len(self.stack) >= MAX_STACK:
            raise PickleError(f"the pickle stack grows past {MAX_STACK} items")
        self.stack.append(value)

    def pop(self) -> object:
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            raise PickleError(f"a pickle opcode at byte {self.reader.offset} pops an empty stack")
        return self.stack.pop()

    def top(self) -> object:
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            raise PickleError(f"a pickle opcode at byte {self.reader.offset} reads an empty stack")
        return self.stack[-1]

    def pop_mark(self) -> list[object]:
        if not self.marks:
            raise PickleError(f"a pickle opcode at byte {self.reader.offset} has no MARK before it")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def put(self, index: int | None) -> None:
        if index is None or index < 0:
            raise PickleError(f"a negative memo index at byte {self.reader.offset}")
        value = self.top()
        if index < len(self.memo):
            self.memo[index] = value
        elif index == len(self.memo) and not self.sparse:
            if len(self.memo) >= MAX_MEMO:
                raise PickleError(f"the pickle memo grows past {MAX_MEMO} entries")
            self.memo.append(value)
        else:
            if len(self.sparse) >= MAX_SPARSE_MEMO and index not in self.sparse:
                raise PickleError(f"more than {MAX_SPARSE_MEMO} memo entries out of sequence")
            self.sparse[index] = value

    def get(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self.memo):
            self.push(self.memo[index])
        elif index is not None and index in self.sparse:
            self.push(self.sparse[index])
        else:
            raise PickleError(f"a memo get at byte {self.reader.offset} names an index never put")

    def made(self, value: object) -> object:
        """Counts a tuple, dict or call made by the walk against MAX_OBJECTS."""
        self.facts.objects += 1
        if self.facts.objects > MAX_OBJECTS:
            raise PickleError(f"the pickle makes more than {MAX_OBJECTS} objects (more than any model)")
        return value

    def tuple_of(self, items: list[object]) -> object:
        if not items:
            return ()
        return self.made(tuple(items)) if len(items) <= MAX_KEPT_TUPLE else OPAQUE

    def note_global(self, module: object, name: object) -> Global:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise PickleError(f"a global at byte {self.reader.offset} is not named by two strings")
        if self.protocol < 3:
            # What pickle's find_class resolves with fix_imports (the default): the name that is imported.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        self.facts.globals.add((module, name))
        if len(self.facts.globals) > MAX_GLOBALS:
            raise PickleError(f"the pickle imports more than {MAX_GLOBALS} distinct globals")
        return Global(module=module, name=name)

    # -- the walk -----------------------------------------------------------------------------------

    def run(self) -> object:
        read, table, push = self.reader.read, _DISPATCH, self.push
        while True:
            code = read(1)
            if not code:
                raise PickleError(f"truncated pickle: no STOP before the end at byte {self.reader.offset}")
            entry = table[code[0]]
            if entry is None:
                raise PickleError(f"byte {self.reader.offset - 1} is not a pickle opcode ({code!r})")
            op, handler, constant = entry
            arg = None if op.arg is None else self.argument(op)
            if handler is not None:
                handler(self, arg)
            elif constant is _STOP:
                return self.pop()
            else:
                push(arg if constant is _ARG else constant)

    def argument(self, op: pickletools.OpcodeInfo) -> object:
        reader, kind = self.reader, op.arg
        if kind is None:
            return None
        name = kind.name
        fixed = _FIXED.get(name)
        if fixed is not None:
            size, fmt = fixed
            return struct.unpack(fmt, _read_exact(reader, size, op.name))[0]
        if name in _SIZED:
            prefix, fmt, text = _SIZED[name]
            size = struct.unpack(fmt, _read_exact(reader, prefix, op.name))[0]
            if size < 0:
                raise PickleError(f"{op.name} at byte {reader.offset} declares a negative length")
            return _sized_string(reader, size, op.name, text=text, facts=self.facts)
        if name in ("long1", "long4"):
            prefix, fmt = (1, "<B") if name == "long1" else (4, "<i")
            size = struct.unpack(fmt, _read_exact(reader, prefix, op.name))[0]
            if size < 0:
                raise PickleError(f"{op.name} at byte {reader.offset} declares a negative length")
            if size > 64:
                _skip_exact(reader, size, op.name)
                return OPAQUE
            return int.from_bytes(_read_exact(reader, size, op.name), "little", signed=True)
        if name == "stringnl_noescape_pair":
            return (_text(_line(reader), op.name), _text(_line(reader), op.name))
        line = _line(reader)
        if name == "stringnl_noescape":
            return _text(line, op.name)
        if name == "stringnl":
            return _unquote(line)
        if name == "unicodestringnl":
            if line is None:
                return OPAQUE
            try:
                return line.decode("raw-unicode-escape")
            except UnicodeDecodeError:
                raise PickleError(f"UNICODE at byte {reader.offset} is malformed") from None
        if name in ("decimalnl_short", "decimalnl_long"):
            if line is None:
                return OPAQUE
            digits = line.decode("latin-1").rstrip("L")
            if digits in ("00", "01"):
                return digits == "01"  # protocol 0 spells True and False as INT 01 and 00
            try:
                return int(digits)
            except ValueError:
                raise PickleError(f"{op.name} at byte {reader.offset} is not a number") from None
        if name == "floatnl":
            return OPAQUE
        raise PickleError(f"{op.name}: an argument kind this reader does not know ({name})")

    # -- opcodes with effects beyond a push ---------------------------------------------------------

    def op_mark(self, _: object) -> None:
        if len(self.marks) >= MAX_STACK:
            raise PickleError(f"more than {MAX_STACK} pickle MARKs open")
        self.marks.append(len(self.stack))

    def op_pop(self, _: object) -> None:
        if self.stack and not (self.marks and len(self.stack) == self.marks[-1]):
            self.stack.pop()
        else:
            self.pop_mark()  # POP on a mark pops the mark, as pickle's loader does

    def op_pop_mark(self, _: object) -> None:
        self.pop_mark()

    def op_dup(self, _: object) -> None:
        self.push(self.top())

    def op_tuple(self, _: object) -> None:
        self.push(self.tuple_of(self.pop_mark()))

    def op_tuple_n(self, count: int) -> None:
        items = [self.pop() for _ in range(count)][::-1]
        self.push(self.tuple_of(items))

    def op_list(self, _: object) -> None:
        self.pop_mark()
        self.push(OPAQUE)

    def op_dict(self, _: object) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise PickleError(f"DICT at byte {self.reader.offset} has an odd number of items")
        result = Dict()
        self.made(result)
        for key, value in zip(items[::2], items[1::2], strict=True):
            result.set(key, value)
        self.push(result)

    def op_append(self, _: object) -> None:
        self.pop()
        self.top()

    def op_appends(self, _: object) -> None:
        self.pop_mark()
        self.top()

    def op_setitem(self, _: object) -> None:
        value, key = self.pop(), self.pop()
        target = self.top()
        if isinstance(target, Dict):
            target.set(key, value)

    def op_setitems(self, _: object) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise PickleError(f"SETITEMS at byte {self.reader.offset} has an odd number of items")
        target = self.top()
        if isinstance(target, Dict):
            for key, value in zip(items[::2], items[1::2], strict=True):
                target.set(key, value)

    def op_additems(self, _: object) -> None:
        self.pop_mark()
        self.top()

    def op_frozenset(self, _: object) -> None:
        self.pop_mark()
        self.push(OPAQUE)

    def op_global(self, arg: object) -> None:
        module, name = arg if isinstance(arg, tuple) else (None, None)
        self.push(self.note_global(module, name))

    def op_stack_global(self, _: object) -> None:
        name = self.pop()
        module = self.pop()
        self.push(self.note_global(module, name))

    def op_inst(self, arg: object) -> None:
        module, name = arg if isinstance(arg, tuple) else (None, None)
        cls = self.note_global(module, name)
        self.push(self.made(Obj(cls, self.tuple_of(self.pop_mark()))))

    def op_obj(self, _: object) -> None:
        items = self.pop_mark()
        if not items:
            raise PickleError(f"OBJ at byte {self.reader.offset} has no class")
        self.push(self.made(Obj(items[0], self.tuple_of(items[1:]))))

    def op_newobj(self, _: object) -> None:
        args = self.pop()
        self.push(self.made(Obj(self.pop(), args)))

    def op_newobj_ex(self, _: object) -> None:
        self.pop()  # keyword arguments
        args = self.pop()
        self.push(self.made(Obj(self.pop(), args)))

    def op_reduce(self, _: object) -> None:
        args = self.pop()
        self.push(self.made(Obj(self.pop(), args)))

    def op_build(self, _: object) -> None:
        state = self.pop()
        target = self.top()
        if not isinstance(target, Obj):
            return
        target.state = state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], Dict):
            state = state[0]  # (dict state, slot state)
        if not isinstance(state, Dict):
            return
        version = state.kept.get("_sklearn_version")
        if isinstance(version, str):
            self.facts.sklearn_versions.add(version)
            self.facts.versioned_states += 1
        cls = target.cls()
        if self.joblib and cls is not None and (cls.module, cls.name) == _NUMPY_WRAPPER:
            self.skip_array(state)
        elif cls is not None and cls.module.split(".")[0] == "xgboost" and cls.name == "Booster":
            self.xgboost_version(state.kept.get("handle"))

    def xgboost_version(self, handle: object) -> None:
        # Booster.__getstate__ keeps the model as a bytearray (BYTEARRAY8, or bytearray(bytes) below
        # protocol 5) of XGBoost's UBJSON serialization, whose last field is `version`.
        tail = _bytes_tail(handle, 0)
        version = ubj_version_in_tail(tail) if tail is not None else None
        if version is not None:
            self.facts.library_versions.setdefault("xgboost", set()).add(version)

    def op_persid(self, _: object) -> None:
        self.facts.persistent_ids += 1
        self.push(OPAQUE)

    def op_binpersid(self, _: object) -> None:
        self.pop()
        self.facts.persistent_ids += 1
        self.push(OPAQUE)

    def op_put(self, arg: object) -> None:
        self.put(arg if isinstance(arg, int) else None)

    def op_memoize(self, _: object) -> None:
        self.put(len(self.memo) + len(self.sparse))  # pickle's MEMOIZE: the next index, len(memo)

    def op_get(self, arg: object) -> None:
        self.get(arg if isinstance(arg, int) else None)

    def op_ext(self, _: object) -> None:
        # An extension code names a global through copyreg's registry, which is empty unless the loading
        # program fills it: unloadable as a plain file, and not a name this reader can report.
        self.push(OPAQUE)

    def op_nop(self, _: object) -> None:
        pass

    def op_proto(self, arg: object) -> None:
        if not isinstance(arg, int) or arg > pickle.HIGHEST_PROTOCOL:
            raise PickleError(f"pickle protocol {arg} is newer than any Python reads")
        self.protocol = arg
        if self.depth == 0 and self.facts.protocol is None and isinstance(arg, int):
            self.facts.protocol = arg

    # -- joblib's in-band arrays --------------------------------------------------------------------

    def skip_array(self, state: Dict) -> None:
        shape, order = state.kept.get("shape"), state.kept.get("order")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise PickleError("a joblib array wrapper's shape is not a tuple of sizes")
        if order not in ("C", "F"):
            raise PickleError("a joblib array wrapper's order is neither C nor F")
        itemsize, objects = _dtype_itemsize(state.kept.get("dtype"))
        self.facts.arrays += 1
        if objects:
            # An object array is pickled on its own (protocol 2) right here; its globals count too.
            if self.depth >= MAX_NESTING:
                raise PickleError(f"pickles nested more than {MAX_NESTING} deep")
            walk(self.reader, self.facts, joblib=False, depth=self.depth + 1)
            return
        count = 1
        for size in shape:
            count *= size
            if count * itemsize > MAX_ARRAY_BYTES:
                raise PickleError(f"a joblib array declares more than {MAX_ARRAY_BYTES >> 30} GiB")
        if "numpy_array_alignment_bytes" in state.kept:
            # joblib >= 1.2 writes one byte with the padding length, then that many padding bytes.
            padding = _read_exact(self.reader, 1, "joblib array padding")[0]
            _skip_exact(self.reader, padding, "joblib array padding")
        _skip_exact(self.reader, count * itemsize, "joblib array data")
        self.facts.array_bytes += count * itemsize


_BYTES_MAKERS = (Global(module="builtins", name="bytearray"), Global(module="_codecs", name="encode"))


def _bytes_tail(value: object, depth: int) -> bytes | None:
    """The last bytes of a bytes-like value as pickled: bytes, BYTEARRAY8, bytearray(bytes), and
    protocol 2's bytearray(text, 'latin-1') and _codecs.encode(text, 'latin1')."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, Blob):
        return value.latin1_tail()
    if isinstance(value, str):
        return value.encode("latin-1", "ignore")
    if isinstance(value, Obj) and value.callee in _BYTES_MAKERS and depth < 2:
        args = value.args
        return _bytes_tail(args[0], depth + 1) if isinstance(args, tuple) and args else None
    return None


_ARG = object()
_STOP = object()
_FIXED = {
    "uint1": (1, "<B"),
    "uint2": (2, "<H"),
    "uint4": (4, "<I"),
    "uint8": (8, "<Q"),
    "int4": (4, "<i"),
    "float8": (8, ">d"),
}
# Length-prefixed arguments: (prefix bytes, prefix format, decoded as UTF-8 text).
_SIZED = {
    "string1": (1, "<B", False),
    "string4": (4, "<i", False),
    "bytes1": (1, "<B", False),
    "bytes4": (4, "<I", False),
    "bytes8": (8, "<Q", False),
    "bytearray8": (8, "<Q", False),
    "unicodestring1": (1, "<B", True),
    "unicodestring4": (4, "<I", True),
    "unicodestring8": (8, "<Q", True),
}
# Opcodes that push one value: their argument (_ARG) or a constant.
_PUSH_CONSTANT: dict[str, object] = {
    "INT": _ARG,
    "BININT": _ARG,
    "BININT1": _ARG,
    "BININT2": _ARG,
    "LONG": _ARG,
    "LONG1": _ARG,
    "LONG4": _ARG,
    "FLOAT": OPAQUE,
    "BINFLOAT": OPAQUE,
    "BINBYTES": _ARG,
    "SHORT_BINBYTES": _ARG,
    "BINBYTES8": _ARG,
    "BYTEARRAY8": _ARG,
    "UNICODE": _ARG,
    "SHORT_BINUNICODE": _ARG,
    "BINUNICODE": _ARG,
    "BINUNICODE8": _ARG,
    "NONE": None,
    "NEWTRUE": True,
    "NEWFALSE": False,
    "EMPTY_TUPLE": (),
    "EMPTY_LIST": OPAQUE,
    "EMPTY_SET": OPAQUE,
    "NEXT_BUFFER": OPAQUE,
}


def _string_arg(self: _Walker, arg: object) -> None:
    self.push(_py2_string(arg) if isinstance(arg, bytes) else arg)


def _empty_dict(self: _Walker, _: object) -> None:
    self.push(self.made(Dict()))


_HANDLERS: dict[str, Callable[[_Walker, object], None]] = {
    "MARK": _Walker.op_mark,
    "POP": _Walker.op_pop,
    "POP_MARK": _Walker.op_pop_mark,
    "DUP": _Walker.op_dup,
    "STRING": _string_arg,
    "BINSTRING": _string_arg,
    "SHORT_BINSTRING": _string_arg,
    "EMPTY_DICT": _empty_dict,
    "TUPLE": _Walker.op_tuple,
    "TUPLE1": lambda self, _: self.op_tuple_n(1),
    "TUPLE2": lambda self, _: self.op_tuple_n(2),
    "TUPLE3": lambda self, _: self.op_tuple_n(3),
    "LIST": _Walker.op_list,
    "DICT": _Walker.op_dict,
    "APPEND": _Walker.op_append,
    "APPENDS": _Walker.op_appends,
    "SETITEM": _Walker.op_setitem,
    "SETITEMS": _Walker.op_setitems,
    "ADDITEMS": _Walker.op_additems,
    "FROZENSET": _Walker.op_frozenset,
    "GLOBAL": _Walker.op_global,
    "STACK_GLOBAL": _Walker.op_stack_global,
    "INST": _Walker.op_inst,
    "OBJ": _Walker.op_obj,
    "NEWOBJ": _Walker.op_newobj,
    "NEWOBJ_EX": _Walker.op_newobj_ex,
    "REDUCE": _Walker.op_reduce,
    "BUILD": _Walker.op_build,
    "PERSID": _Walker.op_persid,
    "BINPERSID": _Walker.op_binpersid,
    "PUT": _Walker.op_put,
    "BINPUT": _Walker.op_put,
    "LONG_BINPUT": _Walker.op_put,
    "MEMOIZE": _Walker.op_memoize,
    "GET": _Walker.op_get,
    "BINGET": _Walker.op_get,
    "LONG_BINGET": _Walker.op_get,
    "EXT1": _Walker.op_ext,
    "EXT2": _Walker.op_ext,
    "EXT4": _Walker.op_ext,
    "PROTO": _Walker.op_proto,
    "FRAME": _Walker.op_nop,
    "READONLY_BUFFER": _Walker.op_nop,
}


def walk(reader: ChunkReader, facts: PickleFacts, *, joblib: bool, depth: int = 0) -> None:
    """Walk one pickle stream from the reader's position to its STOP (PickleError when malformed)."""
    facts.pickles += 1
    _Walker(reader, facts, joblib=joblib, depth=depth).run()


def walk_all(reader: ChunkReader, facts: PickleFacts, *, joblib: bool) -> None:
    """Walk the stream and every pickle that directly follows it (PROTO first), as legacy torch files
    and hand-made archives concatenate them: a loader may read each, so each one's globals count."""
    walk(reader, facts, joblib=joblib)
    while reader.peek(1) == b"\x80":
        walk(reader, facts, joblib=joblib)


_Entry = tuple[pickletools.OpcodeInfo, Callable[[_Walker, object], None] | None, object]


def _dispatch() -> list[_Entry | None]:
    """Per opcode byte: (its description, its handler or None, the value a plain push pushes)."""
    table: list[_Entry | None] = [None] * 256
    for op in pickletools.opcodes:
        if op.name == "STOP":
            table[ord(op.code)] = (op, None, _STOP)
        elif op.name in _HANDLERS:
            table[ord(op.code)] = (op, _HANDLERS[op.name], None)
        elif op.name in _PUSH_CONSTANT:
            table[ord(op.code)] = (op, None, _PUSH_CONSTANT[op.name])
        else:
            # An opcode a newer Python added: the walk must learn its meaning before it can read it.
            raise AssertionError(f"pickle opcode {op.name} has no meaning in the walk")
    return table


_DISPATCH = _dispatch()
