"""The lock as data: every pinned layer of the environment. Frozen, keyword-only, no IO.

Collections are tuples so values hash and compare structurally; writers sort them, so order here
carries no meaning unless a field says it does (base layers do).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from mlenv.model.facts import AptFact, CudaComponent
from mlenv.model.modelfacts import ModelFacts
from mlenv.model.spec import ModelStrategy, ResolverName, is_remote
from mlenv.model.target import Target, deb_architecture

LOCK_VERSION = 1
# "built": a wheel mlenv built on the host at lock (from an sdist, a local path or a VCS commit); its
# hash is what that build gave, and the file is in the content store, not at any URL.
HashSource = Literal["index", "computed", "built"]
BuiltFrom = Literal["sdist", "directory", "vcs"]


@dataclass(frozen=True, kw_only=True)
class BasePlatform:
    platform: str
    manifest_digest: str
    config_digest: str
    diff_ids: tuple[str, ...]  # in layer order, bottom first
    os_id: str
    os_version: str
    glibc: str | None
    python: str | None
    # The base's own dpkg set: what verify expects beneath the locked apt closure, and what an
    # SBOM of the lock lists for the base without pulling it.
    packages: tuple[AptFact, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LockedBase:
    reference: str  # as written in the spec
    registry: str
    repository: str
    digest: str  # what the reference resolved to: an index digest or a single manifest digest
    platforms: tuple[BasePlatform, ...]


@dataclass(frozen=True, kw_only=True)
class AptSource:
    mirror: str  # the mirror actually used for the indexes and .debs
    suite: str
    components: tuple[str, ...]
    snapshot: str | None = None  # snapshot URL for the as-of time, where the distro has one
    snapshot_timestamp: str | None = None
    signed_by: str | None = None  # the keyring the Release was verified with, None when not verified
    # Where the pins were resolved: "snapshot" (the archive as it was at as-of) or "mirror" (as it is now,
    # when no snapshot service answered; the .debs are then in the snapshot at snapshot_timestamp).
    resolved_from: Literal["snapshot", "mirror"] | None = None
    # A third-party archive (NVIDIA's CUDA repository, ...): no snapshot service keeps its old .debs, so
    # its pins record their full URL and are fetched from there, the content store or the vault only.
    no_snapshot: bool = False


@dataclass(frozen=True, kw_only=True)
class AptPin:
    name: str
    version: str
    architecture: str
    filename: str
    size: int
    sha256: str
    requested: bool
    url: str | None = None  # the .deb's full URL, for a pin from a source with no snapshot service


@dataclass(frozen=True, kw_only=True)
class LockedApt:
    sources: tuple[AptSource, ...] = ()
    packages: tuple[AptPin, ...] = ()


def platform_apt(apt: LockedApt, platform: str) -> tuple[AptPin, ...]:
    """The pins installed on `platform`: those of its Debian architecture and the architecture-free ones.
    One lock holds every platform's closure (resolve.lock merges them), an image holds one."""
    wanted = (deb_architecture(platform), "all")
    return tuple(pin for pin in apt.packages if pin.architecture in wanted)


@dataclass(frozen=True, kw_only=True)
class PythonFile:
    """A wheel or sdist of a pin (PEP 751 names), with where its hash came from."""

    name: str
    url: str
    size: int | None
    sha256: str
    hash_source: HashSource = "index"
    built_from: BuiltFrom | None = None  # with hash_source "built": what the wheel was built from


@dataclass(frozen=True, kw_only=True)
class PinSource:
    """Where a pin built on the host came from, with PEP 751's names: a directory of the project (its
    path relative to the project and a hash of its tree), or a VCS URL with the commit its ref named."""

    kind: Literal["directory", "vcs"]
    url: str  # the directory relative to the project, or the VCS URL without `git+` and the ref
    tree_sha256: str | None = None  # directory: the tree as read at lock (a change makes the lock stale)
    requested_revision: str | None = None  # vcs: the ref as written (None: the remote's HEAD)
    commit_id: str | None = None  # vcs: the full commit the ref named at lock


@dataclass(frozen=True, kw_only=True)
class PythonPin:
    name: str  # normalised (PEP 503)
    version: str
    index: str
    requested: bool
    marker: str | None = None
    wheels: tuple[PythonFile, ...] = ()
    sdist: PythonFile | None = None
    source: PinSource | None = None  # a directory or VCS pin (no index file); None for an index pin


@dataclass(frozen=True, kw_only=True)
class LockedPython:
    resolver: ResolverName
    requires_python: str
    venv: str
    index_url: str
    extra_index_urls: tuple[str, ...] = ()
    packages: tuple[PythonPin, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LockedCuda:
    # The spec's [cuda] version: "none" for CPU-only or not set (the lock file writes no `requested`
    # then, when the stack carries CUDA: `release` records what was found), else e.g. "12.1".
    requested: str
    release: str | None = None  # the CUDA release the stack is ("12.1"), found; None for CPU-only
    components: tuple[CudaComponent, ...] = ()
    min_driver: str | None = None
    torch_label: str | None = None
    torch_index: str | None = None


@dataclass(frozen=True, kw_only=True)
class LockedModel:
    source: str
    target: str
    strategy: ModelStrategy
    sha256: str
    size: int | None = None
    # What the file says about itself (format, producers, details, note), read at lock without executing
    # it. None when it was not read: a remote model (not fetched at lock), or a lock written before
    # mlenv recorded producers (`lock --check` calls that stale). `imports` and `unsafe` are not
    # recorded: a lock refuses an unsafe pickle, and the rest is the reader's business.
    facts: ModelFacts | None = None
    # The spec's accept-producer: (library, the written version accepted), sorted. verify holds the
    # image by the same acceptance, so a mismatch accepted at lock is not a drift forever after.
    accept_producer: tuple[tuple[str, str], ...] = ()

    @property
    def remote(self) -> bool:
        return is_remote(self.source)


@dataclass(frozen=True, kw_only=True)
class LockedApp:
    copy: tuple[str, ...] = ()
    workdir: str = "/app"
    cmd: tuple[str, ...] = ()
    port: int | None = None
    healthcheck: str | None = None
    user: str = "app"
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Lock:
    name: str
    spec_hash: str
    target: Target
    python: LockedPython
    base: LockedBase | None = None
    apt: LockedApt = field(default_factory=LockedApt)
    cuda: LockedCuda = field(default_factory=lambda: LockedCuda(requested="none"))
    app: LockedApp = field(default_factory=LockedApp)
    models: tuple[LockedModel, ...] = ()
    as_of: datetime | None = None
    lock_version: int = LOCK_VERSION


def for_platform(lock: Lock, platform: str) -> Lock:
    """`lock` as the image of one of its platforms sees it: that platform alone, and its apt pins. What an
    image's build renders from (its Dockerfile installs one architecture's .debs); the base keeps every
    platform's entry, so the image's label still names the digest the lock pinned."""
    if platform not in lock.target.platforms:
        raise ValueError(f"{platform} is not a platform of the lock")
    if lock.target.platforms == (platform,):
        return lock
    return replace(
        lock,
        target=replace(lock.target, platforms=(platform,)),
        apt=replace(lock.apt, packages=platform_apt(lock.apt, platform)),
    )
