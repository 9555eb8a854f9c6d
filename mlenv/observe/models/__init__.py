"""Model files read without executing them: which library and version wrote each, and what it imports.

`read_model` recognises the format by its first bytes (the name's suffix only breaks ties), reads
the stream once and keeps memory bounded whatever the file's size: pickles are walked opcode by
opcode (never unpickled), compressed joblib files inflated as they stream, zip archives read through
their directory, protobuf and UBJSON skipped field by field. Every malformed or hostile file is one
ModelError naming the file.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from mlenv.errors import MlenvError
from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.observe.models.compressed import compression_of, inflate
from mlenv.observe.models.pickles import PickleError, PickleFacts, walk_all
from mlenv.observe.models.unsafe import is_unsafe
from mlenv.observe.stream.decompress import ChunkReader, StreamError, read_chunks


class ModelError(MlenvError):
    """A model file is malformed or hostile (truncated, a bomb, a crafted header). Names the file."""


class FormatError(Exception):
    """A format reader found what its format forbids (turned into ModelError with the file's name)."""


# Top-level modules of libraries whose estimators a pickle stores, and the PyPI project of each: the
# library a loader needs at the version that wrote the file.
ESTIMATOR_LIBRARIES = {
    "sklearn": "scikit-learn",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "catboost": "catboost",
    "imblearn": "imbalanced-learn",
    "statsmodels": "statsmodels",
    "torch": "torch",
    "skorch": "skorch",
    "keras": "keras",
    "tensorflow": "tensorflow",
}
# Import names that differ from their PyPI project (others are their own project's name).
PROJECT_OF_MODULE = {
    **ESTIMATOR_LIBRARIES,
    "PIL": "pillow",
    "yaml": "pyyaml",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "dateutil": "python-dateutil",
    "google": "protobuf",
}


def read_model(stream: BinaryIO, *, name: str) -> ModelFacts:
    """What the model file in `stream` says about itself (its format, producers, imports).

    `name` is the file as the user knows it (a project path or a path in an image); it names the
    file in every error and its suffix breaks ties between formats that share first bytes."""
    shown = name.replace("\n", "\\n")[:300]
    try:
        return _read(stream, name)
    except (PickleError, StreamError, FormatError) as error:
        raise ModelError(f"model {shown}: {_one_line(str(error))}") from None
    except OSError as error:
        raise ModelError(f"model {shown}: cannot be read ({error.strerror or error})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _read(stream: BinaryIO, name: str) -> ModelFacts:
    reader = ChunkReader(read_chunks(stream))
    head = reader.peek(16)
    if not head:
        raise FormatError("the file is empty")
    kind = compression_of(head)
    if kind is not None:
        inner = ChunkReader(inflate(kind, read_chunks(_ReaderFile(reader))))
        again = compression_of(inner.peek(8))
        if again is not None:
            # joblib inflates once: a compressed stream inside is not a pickle it can load (and nesting is
            # how a small file hides a large expansion).
            raise FormatError(f"a {again} stream inside the {kind} stream: joblib decompresses once")
        return _pickle_facts(inner, f"joblib+{kind}", name)
    if _looks_like_pickle(head, name):
        return _pickle_facts(reader, "joblib" if name.endswith(".joblib") else "pickle", name)
    return ModelFacts(format="unknown", note="not a format mlenv reads (pickle, joblib)")


class _ReaderFile:
    """A ChunkReader seen as a file (read(n)), to chain one stream into the next."""

    def __init__(self, reader: ChunkReader) -> None:
        self._reader = reader

    def read(self, size: int) -> bytes:
        return self._reader.read(size)


# Opcodes a protocol 0 or 1 pickle of a model starts with: MARK, GLOBAL, EMPTY_DICT/LIST/TUPLE, INST.
_OLD_PROTOCOL_STARTS = b"(c}])i"


def _looks_like_pickle(head: bytes, name: str) -> bool:
    if head[0] == 0x80:
        return len(head) > 1 and head[1] <= 5
    if name.endswith((".pkl", ".pickle", ".joblib", ".pck", ".sav")):
        return True  # named a pickle: read as one, so a malformed one is an error rather than "unknown"
    return head[:1] in [bytes([c]) for c in _OLD_PROTOCOL_STARTS]


def _pickle_facts(reader: ChunkReader, container: str, name: str) -> ModelFacts:
    facts = PickleFacts()
    walk_all(reader, facts, joblib=True)
    fmt = container
    if container == "pickle" and facts.arrays:
        fmt = "joblib"  # NumpyArrayWrapper with in-band data: only joblib.load reads it back
    return pickle_model_facts(facts, fmt)


def pickle_model_facts(
    facts: PickleFacts, fmt: str, *, extra: tuple[tuple[str, str], ...] = ()
) -> ModelFacts:
    """ModelFacts of a walked pickle (also torch's data.pkl): producers from the estimator libraries it
    imports, scikit-learn's version from the `_sklearn_version` its estimators carry."""
    globals_ = sorted(facts.globals)
    imports = tuple(sorted({f"{module}.{name}" for module, name in globals_}))
    unsafe = tuple(sorted({f"{module}.{name}" for module, name in globals_ if is_unsafe(module, name)}))
    tops = {module.split(".")[0] for module, _ in globals_}
    producers: list[Producer] = []
    unversioned: list[str] = []
    for top in sorted(tops & ESTIMATOR_LIBRARIES.keys()):
        library = ESTIMATOR_LIBRARIES[top]
        if top == "sklearn" and facts.sklearn_versions:
            producers += [Producer(library=library, version=v) for v in sorted(facts.sklearn_versions)]
        else:
            producers.append(Producer(library=library))
            unversioned.append(library)
    needs = sorted(
        {
            PROJECT_OF_MODULE.get(top, top)
            for top in tops
            if top not in sys.stdlib_module_names and top not in ("__builtin__", "__main__", "copy_reg")
        }
    )
    details = [("needs", project) for project in needs]
    if facts.protocol is not None:
        details.append(("pickle_protocol", str(facts.protocol)))
    details += extra
    note = None
    if unversioned:
        note = (
            f"the file records no version of {', '.join(unversioned)} "
            "(a pickle records only scikit-learn's, in each estimator's state)"
        )
    elif not producers:
        note = "the pickle stores no estimator of a known library, so it records no producer version"
    producers.sort(key=lambda p: (p.library, p.version or ""))
    return ModelFacts(
        format=fmt,
        producers=tuple(producers),
        details=tuple(sorted(details)),
        imports=imports,
        unsafe=unsafe,
        note=note,
    )


__all__ = ["ModelError", "read_model"]
