"""EnvFacts: what an environment contains, produced both by the lock (what should be) and by the
observer (what is). Frozen, keyword-only, no IO.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlenv.model.modelfacts import ModelFacts


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
class PthFact:
    """A .pth file of a site directory."""

    path: str
    site: str
    runs_code: bool  # it has an `import` line, which site.py executes at every interpreter start
    sha256: str


@dataclass(frozen=True, kw_only=True)
class InterpreterFact:
    path: str
    version: str
    # The site directories it imports installed packages from, as its site.py would find them (read,
    # never run); empty where not observed (a lock's expectation names no sites).
    sites: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ArtifactFact:
    path: str
    sha256: str
    # A model file's own account of its producer (read, never executed); None when not read.
    model: ModelFacts | None = None
    accept_producer: tuple[tuple[str, str], ...] = ()  # the lock's side: mismatches the spec accepts


@dataclass(frozen=True, kw_only=True)
class HealthcheckFact:
    """An image's HEALTHCHECK as its config holds it (durations in nanoseconds, as the engine writes them)."""

    test: tuple[str, ...]  # ("CMD", argv...), ("CMD-SHELL", line) or ("NONE",)
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0


def argv_of(value: Any) -> tuple[str, ...] | None:
    """A config's Cmd or Entrypoint (a list, a string, or null) as a tuple."""
    if value is None:
        return None
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def healthcheck_of(inner: Mapping[str, Any]) -> HealthcheckFact | None:
    """The Healthcheck of a config's inner `config` object, or None."""
    check = inner.get("Healthcheck")
    if not check:
        return None
    return HealthcheckFact(
        test=tuple(str(t) for t in check.get("Test") or ()),
        interval=int(check.get("Interval") or 0),
        timeout=int(check.get("Timeout") or 0),
        start_period=int(check.get("StartPeriod") or 0),
        retries=int(check.get("Retries") or 0),
    )


@dataclass(frozen=True, kw_only=True)
class ConfigFact:
    """The run-time part of an image config: what a container of the image starts as and with.

    `env` and `labels` are sorted (key, value) pairs; `exposed_ports` and `volumes` sorted names
    ("8000/tcp", "/models"). A field the config leaves out is None or empty, as the engine treats it."""

    user: str = ""
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    exposed_ports: tuple[str, ...] = ()
    healthcheck: HealthcheckFact | None = None
    volumes: tuple[str, ...] = ()
    stop_signal: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    os: str | None = None
    architecture: str | None = None


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
    # The image config's run-time fields; None where there is no config (a directory tree) or, on
    # the expected side, where the comparison does not state them.
    config: ConfigFact | None = None
    pth_files: tuple[PthFact, ...] = ()  # of every site directory found


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
    if facts.config is not None:
        data["config"]["env"] = dict(facts.config.env)
        data["config"]["labels"] = dict(facts.config.labels)
    return data
