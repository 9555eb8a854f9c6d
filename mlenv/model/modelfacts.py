"""What a model file says about itself, read without executing it (observe/models fills these).

A model is loaded in production by the library that wrote it; the lock pins that library. These
facts are what the lock records per model and what verify reads again inside the image. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Producer:
    """The library that wrote a model, as a PyPI project name (normalised, e.g. "scikit-learn")."""

    library: str
    # None when the format records no producer version (the reason is in ModelFacts.note).
    version: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    # The container format, e.g. "pickle", "joblib", "joblib+zlib", "skops", "xgboost-json",
    # "xgboost-ubj", "onnx", "lightgbm-text", "torch-zip", "safetensors", or "unknown".
    format: str
    # Every library the file names as its writer (a joblib file of a Pipeline with a LightGBM step
    # names scikit-learn and lightgbm); sorted by library.
    producers: tuple[Producer, ...] = ()
    # Format facts that bound which loader can read it, sorted: ("ir_version", "9"), ("opset:ai.onnx", "17").
    details: tuple[tuple[str, str], ...] = ()
    # The globals a pickle stream imports ("module.name"), sorted; empty for formats that are not pickles.
    imports: tuple[str, ...] = ()
    # Those of `imports` that can run code on load (os.system, builtins.eval, subprocess.*, ...), sorted.
    unsafe: tuple[str, ...] = ()
    # One sentence for what the reader could not establish ("safetensors records no producer version").
    note: str | None = None
