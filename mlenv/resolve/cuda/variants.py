"""PyTorch's CUDA variants: the +cuXYZ local label of a build, the CUDA release it names, and where
PyTorch publishes the build of a release."""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from mlenv.resolve.cuda.floors import major_minor

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
_CUDA_LABEL = re.compile(r"^cu(\d)(\d+)$")


def cuda_label(release: str) -> str:
    """PyTorch's variant label of a CUDA release: "12.1" -> "cu121"."""
    major, minor = major_minor(release).split(".")
    return f"cu{major}{minor}"


def label_release(label: str) -> str | None:
    """ "cu121" -> "12.1", "cu118" -> "11.8"; None for "cpu", "rocm6.0" and the like."""
    match = _CUDA_LABEL.match(label) if len(label) > 4 else None
    return f"{match.group(1)}{match.group(2)[0]}.{match.group(2)[1:]}" if match else None


def torch_index(release: str) -> str:
    """Where PyTorch publishes the build for a CUDA release (not reachable from every network)."""
    return f"{PYTORCH_INDEX}{cuda_label(release)}"


def torch_hint(requested: str, found: str | None) -> str:
    """What to ask for when torch's CUDA is not the requested one: the request the build matches, or
    the build of the requested release."""
    ask = f'ask for version = "{major_minor(found)}", or ' if found is not None else ""
    return f"{ask}require torch +{cuda_label(requested)} from {torch_index(requested)}"


def requirement_label(text: str) -> str | None:
    """The local label a requirement pins: 'torch==2.3.1+cu118' -> 'cu118'."""
    for specifier in Requirement(text).specifier:
        if specifier.operator in ("==", "===") and "+" in specifier.version:
            return specifier.version.split("+", 1)[1].rstrip(".*")
    return None


def version_label(version: str) -> str | None:
    try:
        return Version(version).local
    except InvalidVersion:
        return None
