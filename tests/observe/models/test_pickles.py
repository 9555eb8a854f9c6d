"""Pickle and joblib files written by real scikit-learn, joblib and LightGBM, read without unpickling."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from mlenv.model.modelfacts import Producer
from mlenv.observe.models import read_model
from mlenv.observe.models.pickles import PickleFacts, walk_all
from mlenv.observe.stream.decompress import ChunkReader
from tests.infra import required
from tests.observe.models.conftest import Made
from tools.localbase import models
from tools.localbase.project import copy_example, train_fraud_model

pytestmark = pytest.mark.network  # the model-making venvs are installed from PyPI on first use

PIPELINE_CLASSES = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.decomposition._pca.PCA",
    "lightgbm.sklearn.LGBMClassifier",
)


def read(path: Path) -> object:
    with path.open("rb") as handle:
        return read_model(handle, name=str(path))


@pytest.mark.parametrize("version", ["1.4.2", "1.5.2"])
def test_a_pipeline_names_every_library_and_scikit_learns_version(made: Made, version: str) -> None:
    path = made.get("sklearn", version=version)
    facts = read_model(path.open("rb"), name="models/model.joblib")
    assert facts.format == "joblib"
    assert facts.producers == (
        Producer(library="lightgbm", version=None),
        Producer(library="scikit-learn", version=version),
    )
    assert set(PIPELINE_CLASSES) <= set(facts.imports)
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in facts.imports
    assert facts.unsafe == ()
    assert ("needs", "joblib") in facts.details and ("needs", "numpy") in facts.details
    assert facts.note is not None and "lightgbm" in facts.note


@pytest.mark.parametrize("version", ["1.4.2", "1.5.2"])
def test_every_estimator_state_is_found_through_the_memo(made: Made, version: str) -> None:
    raw = made.get("sklearn", version=version).read_bytes()
    # The key and the version string are written once; the other estimators refer to them by memo get.
    assert raw.count(b"_sklearn_version") == 1
    assert raw.count(version.encode()) == 1
    facts = PickleFacts()
    walk_all(ChunkReader([raw]), facts, joblib=True)
    # Pipeline, StandardScaler, PCA and LightGBM's inner LabelEncoder each carry the version.
    assert facts.versioned_states == 4
    assert facts.sklearn_versions == {version}
    # The string labels make object arrays, which joblib writes as nested pickles after their wrapper.
    assert facts.pickles == 3
    assert facts.arrays == 10


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"])
def test_every_joblib_compression_is_read(made: Made, compress: str) -> None:
    path = made.get("sklearn", version="1.4.2", compress=compress)
    facts = read(path)
    assert facts.format == f"joblib+{compress}"
    assert Producer(library="scikit-learn", version="1.4.2") in facts.producers
    assert set(PIPELINE_CLASSES) <= set(facts.imports)
    assert facts.unsafe == ()
    # The same model uncompressed says the same about itself.
    plain = read(made.get("sklearn", version="1.4.2"))
    assert (facts.producers, facts.imports) == (plain.producers, plain.imports)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_plain_pickles_of_every_protocol(made: Made, protocol: int) -> None:
    facts = read(made.get("sklearn", version="1.5.2", protocol=protocol))
    assert facts.format == "pickle"
    assert Producer(library="scikit-learn", version="1.5.2") in facts.producers
    assert "sklearn.pipeline.Pipeline" in facts.imports
    assert facts.unsafe == ()
    assert ("pickle_protocol", str(protocol)) in facts.details or protocol < 2


def test_the_fraud_detectors_model(tmp_path: Path) -> None:
    project = copy_example("fraud-detector", tmp_path)
    with required():
        model = train_fraud_model(project)
    facts = read(model)
    assert facts.producers == (
        Producer(library="lightgbm", version=None),
        Producer(library="scikit-learn", version="1.4.2"),
    )
    assert facts.unsafe == ()


@pytest.mark.parametrize("compress", [None, "gzip", "lz4"])
def test_a_malicious_joblib_file_is_unsafe_and_never_runs(made: Made, tmp_path: Path, compress: str) -> None:
    canary = tmp_path / f"canary-{compress}"
    path = made.get("malicious", command=f"touch {canary}", compress=compress)
    facts = read(path)
    assert facts.unsafe == ("posix.system",)
    assert "posix.system" in facts.imports
    assert not canary.exists()
    # The payload is real: joblib.load, in a venv process as a victim would run it, makes the canary.
    victim = models.model_python(models.SKLEARN["1.5.2"])
    subprocess.run([str(victim), "-c", f"import joblib; joblib.load({str(path)!r})"], check=True)
    assert canary.exists()


class _Call:
    """An object that pickles as a call of `function` with `args` (what a hostile __reduce__ returns)."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.function, self.args)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (os.system, "posix.system"),
        (subprocess.Popen, "subprocess.Popen"),
        (eval, "builtins.eval"),
        (exec, "builtins.exec"),
        (getattr, "builtins.getattr"),
    ],
)
def test_calls_that_run_code_are_unsafe(
    tmp_path: Path, protocol: int, function: object, expected: str
) -> None:
    canary = tmp_path / "canary"
    code = function is eval or function is exec
    argument = f"open({str(canary)!r}, 'w')" if code else f"touch {canary}"
    data = pickle.dumps({"model": _Call(function, argument)}, protocol=protocol)
    facts = read_model(io.BytesIO(data), name="evil.pkl")
    assert expected in facts.unsafe
    assert not canary.exists()


def test_inst_and_obj_opcodes_are_imports_too() -> None:
    # Protocol 0's INST and protocol 1's OBJ call a class without REDUCE.
    inst = b"(S'touch x'\nios\nsystem\n."
    facts = read_model(io.BytesIO(inst), name="inst.pkl")
    assert facts.unsafe == ("os.system",)
    obj = b"(csubprocess\nPopen\nS'id'\no."
    assert read_model(io.BytesIO(obj), name="obj.pkl").unsafe == ("subprocess.Popen",)


def test_a_pickle_after_the_first_is_walked_too() -> None:
    # Two pickles back to back (legacy torch files are several): a loader may read the second one.
    data = pickle.dumps([1, 2], protocol=4) + pickle.dumps(_Call(os.system, "id"), protocol=4)
    assert read_model(io.BytesIO(data), name="two.pkl").unsafe == ("posix.system",)


@pytest.mark.parametrize("protocol", [None, 2, 4, 5])
def test_xgboost_in_a_pipeline_records_its_version_in_the_booster(made: Made, protocol: int | None) -> None:
    # The Booster's state is its UBJSON serialization as a bytearray: its last field is the version.
    facts = read(made.get("xgboost_pipeline", protocol=protocol))
    assert facts.producers == (
        Producer(library="scikit-learn", version="1.5.2"),
        Producer(library="xgboost", version="3.2.0"),
    )
    assert "xgboost.sklearn.XGBClassifier" in facts.imports and facts.unsafe == ()
    assert facts.note is None
