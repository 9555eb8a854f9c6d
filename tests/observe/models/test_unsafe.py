"""The unsafe-globals judgement, and a fuzz of the reader: any bytes are facts or one ModelError."""

from __future__ import annotations

import io
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlenv.model.modelfacts import ModelFacts
from mlenv.observe.models import ModelError, read_model
from mlenv.observe.models.unsafe import is_unsafe

# What scikit-learn, joblib, numpy, pandas, LightGBM, XGBoost and torch state dicts import.
ORDINARY = [
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("__builtin__", "object"),
    ("sklearn.pipeline", "Pipeline"),
    ("lightgbm.basic", "Booster"),
    ("xgboost.sklearn", "XGBClassifier"),
    ("pandas.core.frame", "DataFrame"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch", "FloatStorage"),
    ("pathlib", "PosixPath"),
    ("datetime", "datetime"),
    ("functools", "partial"),  # what it wraps is imported, and judged, on its own
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
]
DANGEROUS = [
    ("os", "system"),
    ("posix", "system"),
    ("nt", "system"),
    ("os.path", "join"),  # os.* is judged as a family
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("builtins", "__import__"),
    ("builtins", "getattr"),
    ("__builtin__", "eval"),
    ("sys", "modules"),
    ("importlib", "import_module"),
    ("importlib.machinery", "SourceFileLoader"),
    ("runpy", "run_path"),
    ("shutil", "rmtree"),
    ("socket", "create_connection"),
    ("ctypes", "CDLL"),
    ("pty", "spawn"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("marshal", "loads"),
    ("code", "InteractiveInterpreter"),
    ("webbrowser", "open"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("types", "CodeType"),
    ("timeit", "timeit"),
    ("numpy.testing._private.utils", "runstring"),
    ("numpy", "load"),
    ("joblib", "load"),
    ("torch", "load"),
    ("pandas", "read_pickle"),
    ("pandas", "read_csv"),
    ("pandas.io.parquet", "read_parquet"),
    ("pandas", "eval"),
    ("pandas.core.frame", "DataFrame.query"),
    ("dill._dill", "_create_code"),
    ("pathlib", "Path.write_text"),  # a method reached through its class
    ("builtins", "object.__subclasses__"),  # a dunder walk from any class
    ("builtins", "str.__class__.__base__"),
    ("os\nsystem", "x"),  # not a Python name at all
    ("", "eval"),
]


@pytest.mark.parametrize(("module", "name"), ORDINARY)
def test_what_models_import_is_ordinary(module: str, name: str) -> None:
    assert not is_unsafe(module, name)


@pytest.mark.parametrize(("module", "name"), DANGEROUS)
def test_what_runs_code_on_load_is_unsafe(module: str, name: str) -> None:
    assert is_unsafe(module, name)


def test_a_global_named_on_the_stack_through_the_memo_is_seen() -> None:
    # STACK_GLOBAL's strings may come from memo gets: the module string is put once, fetched later.
    data = (
        b"\x80\x04\x8c\x02os\x94\x8c\x04path\x94\x93\x94"  # os.path, memo 0 = "os"
        b"h\x00\x8c\x06system\x94\x93"  # BINGET 0 -> "os", "system": os.system
        b"\x8c\x02id\x85R."
    )
    facts = read_model(io.BytesIO(data), name="memo.pkl")
    assert facts.unsafe == ("os.path", "os.system")


PREFIXES = [
    b"",
    b"\x80\x04",
    b"\x80\x02",
    b"(",
    b"\x78\x9c",
    b"\x1f\x8b\x08\x00",
    b"BZh9",
    b"\xfd7zXZ\x00",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
    b"PK\x03\x04",
    b'{"learner": ',
    b"{L",
    b"\x08\x08",
    b"tree\nversion=v4\n",
    b"\x10\x00\x00\x00\x00\x00\x00\x00{",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=300), name=st.sampled_from(["m", "m.pkl"]))
def test_any_bytes_are_facts_or_one_model_error(prefix: bytes, body: bytes, name: str) -> None:
    try:
        facts = read_model(io.BytesIO(prefix + body), name=name)
    except ModelError as error:
        assert "\n" not in str(error) and str(error).startswith(f"model {name}: ")
    else:
        assert isinstance(facts, ModelFacts)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_real_pickles_are_facts_or_one_model_error(data: st.DataObject) -> None:
    original = bytearray(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True, b"raw")}, protocol=4))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    try:
        read_model(io.BytesIO(bytes(original)), name="m.pkl")
    except ModelError:
        pass
