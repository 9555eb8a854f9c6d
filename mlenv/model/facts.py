"""EnvFacts: what an environment contains, produced both by the lock (what should be) and by the
observer (what is). Frozen, keyword-only, no IO.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class AptFact:
    name: str
    version: str
    architecture: str


@dataclass(frozen=True, kw_only=True)
class RecordEntry:
    """One line of a dist-info RECORD: path relative to the site dir, and its declared hash."""

    path: str
    sha256: str | None  # urlsafe-base64 digest as RECORD writes it, None when RECORD has none
    size: int | None


@dataclass(frozen=True, kw_only=True)
class DistFact:
    name: str  # normalised (PEP 503)
    version: str
    site: str  # the site-packages directory it was found in
    record: tuple[RecordEntry, ...] = ()
    # Files whose content no longer matches the hash RECORD lists, and files RECORD lists that are
    # gone: filled in by the observer, which has the filesystem to check them against.
    modified_files: tuple[str, ...] = ()
    missing_files: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class InterpreterFact:
    path: str
    version: str


@dataclass(frozen=True, kw_only=True)
class ArtifactFact:
    path: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class EnvFacts:
    """What an environment contains: produced by the lock (should be) and the observer (is)."""

    layer_diff_ids: tuple[str, ...] = ()
    os_id: str | None = None
    os_version: str | None = None
    architecture: str | None = None
    glibc: str | None = None
    interpreters: tuple[InterpreterFact, ...] = ()
    apt: tuple[AptFact, ...] = ()
    python_dists: tuple[DistFact, ...] = ()
    cuda: tuple[CudaComponent, ...] = ()
    artifacts: tuple[ArtifactFact, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class CudaComponent:
    name: str  # "runtime", "cudnn", "cublas", "nccl", "nvjitlink"
    version: str
    source: str  # e.g. "wheel:nvidia-cudnn-cu12", "image:env:NV_CUDNN_VERSION"


def facts_data(facts: EnvFacts) -> dict[str, Any]:
    """EnvFacts as JSON data (inspect --format json, the audit bundle), without each distribution's RECORD
    (thousands of lines; what RECORD says that matters, modified and missing files, is kept)."""
    data = dataclasses.asdict(facts)
    for dist in data["python_dists"]:
        del dist["record"]
    data["labels"] = dict(facts.labels)
    data["env"] = dict(facts.env)
    return data
