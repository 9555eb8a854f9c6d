"""Model files made by the real libraries, in throwaway venvs kept in the test cache.

Each venv is keyed by its requirements; a model is written by a short script run in it, so the file
is exactly what that library version writes (the test process itself never imports those libraries,
and never loads what they wrote). Shared by the model reader's tests and the lock/verify tests.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from tools.localbase import Unavailable
from tools.localbase.cache import cache_dir, cache_lock

# What each scikit-learn version is installed with: numpy 1.26 because scikit-learn 1.4 was built
# against numpy 1.x; joblib 1.4.2 as the fraud example pins it; lz4 so joblib can write lz4.
SKLEARN = {
    "1.4.2": ("scikit-learn==1.4.2", "numpy==1.26.4", "joblib==1.4.2", "lightgbm==4.3.0", "lz4==4.4.5"),
    "1.5.2": (
        "scikit-learn==1.5.2",
        "numpy==1.26.4",
        "joblib==1.4.2",
        "lightgbm==4.3.0",
        "lz4==4.4.5",
        "xgboost-cpu==3.2.0",
        "onnx==1.23.2",
        "safetensors==0.8.0",
        "skops==0.16.0",
    ),
}
# The venv that makes the non-pickle formats (XGBoost, ONNX, safetensors, skops, LightGBM text).
FORMATS = "1.5.2"

# A Pipeline of several estimators: two scikit-learn steps and LightGBM's, as the fraud example has.
# String labels make the classes_ object arrays, which joblib stores as nested pickles.
# argv: out, how ("joblib" or "pickle"), joblib compressor or "none", pickle protocol.
_PIPELINE = """
import sys, pickle, joblib, numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.decomposition import PCA
from lightgbm import LGBMClassifier
rng = np.random.default_rng(7)
x = rng.normal(size=(200, 4))
y = np.where(x[:, 0] + x[:, 1] > 0, "fraud", "ok").astype(object)
model = make_pipeline(StandardScaler(), PCA(n_components=3),
                      LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1, n_jobs=1))
model.fit(x, y)
out, how, compress, protocol = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if how == "pickle":
    with open(out, "wb") as handle:
        pickle.dump(model, handle, protocol=protocol)
else:
    joblib.dump(model, out, compress=(compress, 3) if compress != "none" else 0)
"""
# An object whose unpickling would run a shell command (argv: out, command, compressor or "none").
_MALICIOUS = """
import os, sys, joblib
class Payload:
    def __reduce__(self):
        return (os.system, (sys.argv[2],))
compress = sys.argv[3]
joblib.dump({"model": Payload()}, sys.argv[1], compress=(compress, 3) if compress != "none" else 0)
"""
# A fitted scaler beside a large random array (argv: out, MiB, compressor or "none"): random bytes do
# not compress, so the file is as large as the array.
_LARGE = """
import sys, joblib, numpy as np
from sklearn.preprocessing import StandardScaler
rng = np.random.default_rng(7)
weights = rng.random((int(sys.argv[2]) << 20) // 8)
compress = sys.argv[3]
model = {"scaler": StandardScaler().fit(rng.normal(size=(10, 2))), "weights": weights,
         "fortran": np.asfortranarray(rng.random((300, 7))), "scalar": np.float32(1.5)}
joblib.dump(model, sys.argv[1], compress=(compress, 1) if compress != "none" else 0)
"""
_XGBOOST = """
import sys, numpy as np, xgboost
rng = np.random.default_rng(7)
x = rng.normal(size=(200, 4)); y = (x[:, 0] > 0).astype(int)
booster = xgboost.train({"max_depth": 2, "nthread": 1}, xgboost.DMatrix(x, label=y), num_boost_round=3)
booster.save_model(sys.argv[1])
"""
# XGBoost's scikit-learn estimator in a Pipeline (argv: out, "joblib" or a pickle protocol).
_XGBOOST_PIPELINE = """
import sys, pickle, joblib, numpy as np, xgboost
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
rng = np.random.default_rng(7)
x = rng.normal(size=(200, 4)); y = (x[:, 0] > 0).astype(int)
model = make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1))
model.fit(x, y)
if sys.argv[2] == "joblib":
    joblib.dump(model, sys.argv[1])
else:
    with open(sys.argv[1], "wb") as handle:
        pickle.dump(model, handle, protocol=int(sys.argv[2]))
"""
_LIGHTGBM = """
import sys, numpy as np, lightgbm
rng = np.random.default_rng(7)
x = rng.normal(size=(200, 4)); y = (x[:, 0] > 0).astype(int)
booster = lightgbm.train({"num_leaves": 4, "verbose": -1, "num_threads": 1}, lightgbm.Dataset(x, y),
                         num_boost_round=3)
booster.save_model(sys.argv[1])
"""
# A small ONNX graph built with the onnx package's helpers (no converter): one MatMul and a ML-domain op.
_ONNX = """
import sys, onnx
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.5] * 8)
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny", [x], [y], [w])
model = helper.make_model(graph, producer_name="mlenv-tests", producer_version="0.1",
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
"""
_SAFETENSORS = """
import sys, numpy as np
from safetensors.numpy import save_file
save_file({"weight": np.ones((4, 2), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)},
          sys.argv[1], metadata={"format": "np"})
"""
_SKOPS = """
import sys, numpy as np, skops.io
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(7)
x = rng.normal(size=(100, 3)); y = (x[:, 0] > 0).astype(int)
skops.io.dump(LogisticRegression().fit(x, y), sys.argv[1])
"""


def model_python(requirements: tuple[str, ...]) -> Path:
    """The python of a cached uv venv with exactly `requirements` installed (made once, under a lock)."""
    if shutil.which("uv") is None:
        raise Unavailable("uv", "not installed; it makes the venvs that write the test models")
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    venv = cache_dir("model-venvs") / key
    python = venv / "bin" / "python"
    with cache_lock(f"model-{key}"):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
            subprocess.run(
                ["uv", "pip", "install", "--quiet", "--python", str(python), *requirements], check=True
            )
            # Marks a finished install: an interrupted one is made again rather than half-used.
            (venv / ".complete").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return python


def _write(directory: Path, filename: str, script: str, *args: str, version: str = FORMATS) -> Path:
    """Run `script` in the venv of scikit-learn `version` to write `filename`; the file is kept in the
    cache under a key of everything that decides its bytes, and copied into `directory`."""
    requirements = SKLEARN[version]
    key = hashlib.sha256(repr((requirements, script, filename, args)).encode()).hexdigest()[:16]
    kept = cache_dir("models", key) / filename
    with cache_lock(f"model-file-{key}"):
        if not kept.exists():
            python = model_python(requirements)
            # Written under its own name (XGBoost picks the format by suffix) in a side directory, then
            # renamed: the cached file is whole or absent.
            partial = kept.parent / "partial" / filename
            partial.parent.mkdir(exist_ok=True)
            result = subprocess.run(
                [str(python), "-c", script, str(partial), *args], capture_output=True, text=True
            )
            if result.returncode != 0:
                raise RuntimeError(f"writing {filename} failed:\n{result.stderr[-2000:]}")
            partial.rename(kept)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / filename
    shutil.copyfile(kept, out)
    return out


def sklearn_model(
    directory: Path, *, version: str = "1.5.2", compress: str | None = None, protocol: int | None = None
) -> Path:
    """A fitted Pipeline (StandardScaler, PCA, LGBMClassifier) written by scikit-learn `version` (1.4.2
    or 1.5.2): with joblib 1.4.2 (`compress` a joblib compressor name or None), or with pickle.dump at
    `protocol` when one is given."""
    if protocol is not None:
        name = f"pipeline-{version}.p{protocol}.pkl"
        return _write(directory, name, _PIPELINE, "pickle", "none", str(protocol), version=version)
    suffix = "" if compress is None else f".{compress}"
    name = f"pipeline-{version}{suffix}.joblib"
    return _write(directory, name, _PIPELINE, "joblib", compress or "none", "0", version=version)


def malicious_model(directory: Path, command: str, *, compress: str | None = None) -> Path:
    """A joblib file whose loading would run `command` through os.system (compressed or not)."""
    name = f"malicious{'' if compress is None else '.' + compress}.joblib"
    return _write(directory, name, _MALICIOUS, command, compress or "none")


def large_model(directory: Path, megabytes: int, *, compress: str | None = None) -> Path:
    """A joblib file holding a `megabytes` MiB random float64 array (and a Fortran-ordered one)."""
    name = f"large-{megabytes}{'' if compress is None else '.' + compress}.joblib"
    return _write(directory, name, _LARGE, str(megabytes), compress or "none")


def xgboost_model(directory: Path, *, ubj: bool = False) -> Path:
    """An XGBoost Booster saved as JSON (model.json) or UBJSON (model.ubj), by xgboost-cpu 3.2.0."""
    return _write(directory, "model.ubj" if ubj else "model.json", _XGBOOST)


def xgboost_pipeline_model(directory: Path, *, protocol: int | None = None) -> Path:
    """A Pipeline of StandardScaler and XGBClassifier (xgboost-cpu 3.2.0, scikit-learn 1.5.2), saved by
    joblib, or by pickle.dump at `protocol`."""
    name = "xgboost-pipeline.joblib" if protocol is None else f"xgboost-pipeline.p{protocol}.pkl"
    return _write(directory, name, _XGBOOST_PIPELINE, "joblib" if protocol is None else str(protocol))


def lightgbm_model(directory: Path) -> Path:
    """A LightGBM Booster saved as its text model, by lightgbm 4.3.0."""
    return _write(directory, "model.txt", _LIGHTGBM)


def onnx_model(directory: Path) -> Path:
    """A small ONNX model (ir_version 8, opsets ai.onnx 17 and ai.onnx.ml 3) made by onnx 1.23.2."""
    return _write(directory, "model.onnx", _ONNX)


def safetensors_model(directory: Path) -> Path:
    """Two tensors saved by safetensors 0.8.0 with `{"format": "np"}` metadata."""
    return _write(directory, "model.safetensors", _SAFETENSORS)


def skops_model(directory: Path) -> Path:
    """A fitted LogisticRegression saved by skops 0.16.0 (scikit-learn 1.5.2)."""
    return _write(directory, "model.skops", _SKOPS)
