"""The spec as data: what a user asks for in mlenv.toml. Frozen, keyword-only, no IO."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from mlenv.model.target import DEFAULT_PLATFORM

DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_VENV = "/opt/venv"

ResolverName = Literal["uv", "pip-tools"]
ModelStrategy = Literal["bake", "download", "mount"]


def is_remote(source: str) -> bool:
    """Whether a model source is a URL (fetched, or downloaded at start) rather than a file of the project."""
    return source.startswith(("http://", "https://"))


@dataclass(frozen=True, kw_only=True)
class BaseSpec:
    image: str
    platforms: tuple[str, ...] = (DEFAULT_PLATFORM,)


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """The interpreter and libc to resolve for, when they are not read from the base image."""

    python: str | None = None
    glibc: str | None = None
    platforms: tuple[str, ...] = (DEFAULT_PLATFORM,)


@dataclass(frozen=True, kw_only=True)
class PythonSpec:
    # Every requirement, normalised: inline, from requirements files, from pyproject's [project].
    requirements: tuple[str, ...] = ()
    requirements_files: tuple[str, ...] = ()
    # Chosen [project.optional-dependencies] extras and PEP 735 [dependency-groups] of pyproject.toml.
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    # `-c` lines of requirements files: they bound versions without asking for a package.
    constraints: tuple[str, ...] = ()
    # (package, sha256 hex digests) pinned by `--hash` lines: the lock may use only those files.
    hashes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (package, "file" or "file:line") where each requirement, constraint and hash came from, so a
    # stale lock names the file that changed.
    origins: tuple[tuple[str, str], ...] = ()
    index_url: str = DEFAULT_INDEX_URL
    extra_index_urls: tuple[str, ...] = ()
    resolver: ResolverName = "uv"
    venv: str = DEFAULT_VENV
    # (canonical package name, its own cut-off, or None for none), sorted: packages let past the spec's
    # as-of (`as-of-exceptions`, as uv's exclude-newer-package).
    as_of_exceptions: tuple[tuple[str, datetime | None], ...] = ()
    # Requirements built on the host into wheels at lock: local directories and VCS URLs, sorted.
    sources: tuple[SourceRequirement, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SourceRequirement:
    """A local directory (`./libs/featurelib`) or VCS (`name @ git+https://host/repo@REF`) requirement."""

    kind: Literal["directory", "vcs"]
    location: str  # directory: relative to the project, `/`-separated; vcs: the URL after `git+`, no ref
    name: str | None = None  # vcs: the name written before `@`; directory: None (the build names it)
    revision: str | None = None  # vcs: the ref written after the last `@` (None: the remote's HEAD)
    # directory: sha256 over its files' paths and bytes, read with the spec: a changed tree is a
    # changed spec, so `lock --check` calls the lock stale without building anything.
    tree_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class AptSpec:
    packages: tuple[str, ...] = ()
    mirror: str | None = None


@dataclass(frozen=True, kw_only=True)
class CudaSpec:
    version: str | None = None  # "12.1", "none" for CPU-only, None when unspecified
    cudnn: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    source: str  # a path relative to the project, or a URL for strategy "download"
    target: str  # absolute path inside the image
    strategy: ModelStrategy = "bake"
    sha256: str | None = None  # required for URLs; computed for local files
    # accept-producer: (library, version) pairs, sorted; the lock accepts this model although the
    # library named wrote it at that exact version and the lock pins another (model/producers.py).
    accept_producer: tuple[tuple[str, str], ...] = ()

    @property
    def remote(self) -> bool:
        return is_remote(self.source)


@dataclass(frozen=True, kw_only=True)
class AppSpec:
    copy: tuple[str, ...] = ()
    workdir: str = "/app"
    cmd: tuple[str, ...] = ()
    port: int | None = None
    healthcheck: str | None = None
    user: str = "app"
    env: tuple[tuple[str, str], ...] = ()
    models: tuple[ModelSpec, ...] = ()
    # Project-relative paths of secret-like files or training data that app.copy may put into the
    # image anyway (e.g. a public certificate "app/certs/ca.pem"); a directory allows what is under it.
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Spec:
    path: str  # the file it was read from, for error messages
    project_dir: str  # relative files (requirements, app code, models) are resolved against this
    name: str
    base: BaseSpec | None = None
    target: TargetSpec = field(default_factory=TargetSpec)
    python: PythonSpec = field(default_factory=PythonSpec)
    apt: AptSpec = field(default_factory=AptSpec)
    cuda: CudaSpec = field(default_factory=CudaSpec)
    app: AppSpec = field(default_factory=AppSpec)
    as_of: datetime | None = None
