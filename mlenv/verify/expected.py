"""The ONE projection Lock -> what an image built from it holds, for one platform.

`image_contents` decides what is in the image: the base's own dpkg packages that the apt closure
leaves in place, the closure, the Python pins whose marker admits the platform (with the file
that installs there), the CUDA stack, the models, the interpreter and the labels. Each entry
carries both its fact (what verify compares) and what an SBOM names it by (package URL, sha256,
where it was fetched from). `expected_facts` is verify's view of it, and export's inventory is
built from the same entries, so an SBOM and a verify verdict cannot disagree about what the image
must contain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packageurl import PackageURL
from packaging.markers import Marker
from packaging.tags import Tag

from mlenv.errors import ImageError
from mlenv.files import file_sha256
from mlenv.model.debian import deb_urls
from mlenv.model.facts import AptFact, ArtifactFact, CudaComponent, DistFact, EnvFacts, InterpreterFact
from mlenv.model.labels import LABEL_BASE_DIGEST, LABEL_LOCK
from mlenv.model.lock import (
    AptPin,
    BasePlatform,
    Lock,
    LockedBase,
    LockedModel,
    PythonFile,
    PythonPin,
    platform_apt,
)
from mlenv.model.report import Drift
from mlenv.model.spec import DEFAULT_INDEX_URL
from mlenv.model.target import (
    DEB_ARCHITECTURES,
    marker_environment,
    python_tuple,
    target_tags,
    wheel_installs,
)
from mlenv.observe.fs.apptree import app_entries, entry_mode
from mlenv.render.config import home_dir
from mlenv.render.dockerfile import APP_UID, USER_VOLATILE, source_date_epoch
from mlenv.render.entrypoint import ENTRYPOINT_PATH, entrypoint_script, needs_entrypoint
from mlenv.verify.files import ContentCheck, Lookup
from mlenv.verify.manifest import ExpectedFile

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Docker platform -> the architecture dpkg and os-release name it by.


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    locked: LockedBase
    platform: BasePlatform | None  # None when the lock has no base for the platform described
    purl: str

    @property
    def digest(self) -> str:
        """The platform's own manifest (what the build pulled), else the index digest."""
        return self.platform.manifest_digest if self.platform else self.locked.digest


@dataclass(frozen=True, kw_only=True)
class Deb:
    fact: AptFact
    purl: str
    pin: AptPin | None = None  # None for a package of the base image itself
    download: str | None = None  # the .deb's URL on the lock's mirror

    @property
    def sha256(self) -> str | None:
        return self.pin.sha256 if self.pin else None


@dataclass(frozen=True, kw_only=True)
class Dist:
    fact: DistFact
    pin: PythonPin
    file: PythonFile | None  # the wheel that installs on the platform, else the sdist
    purl: str


@dataclass(frozen=True, kw_only=True)
class Cuda:
    fact: CudaComponent
    name: str  # the component's name as a package: "runtime" alone names nothing
    purl: str


@dataclass(frozen=True, kw_only=True)
class Model:
    locked: LockedModel

    @property
    def fact(self) -> ArtifactFact | None:
        """A baked model is a file of the image; one downloaded or mounted at start is not (yet)."""
        if self.locked.strategy != "bake":
            return None
        return ArtifactFact(
            path=self.locked.target,
            sha256=self.locked.sha256,
            model=self.locked.facts,
            accept_producer=self.locked.accept_producer,
        )

    @property
    def download(self) -> str | None:
        return self.locked.source if self.locked.remote else None


@dataclass(frozen=True, kw_only=True)
class ImageContents:
    """What an image built from the lock for `platform` holds. Every collection is sorted."""

    platform: str
    architecture: str  # as dpkg names it
    base: BaseImage | None
    base_packages: tuple[Deb, ...]  # the base's own packages that the closure does not replace
    apt: tuple[Deb, ...]  # the locked closure
    interpreter: InterpreterFact
    python: tuple[Dist, ...]
    cuda: tuple[Cuda, ...]
    models: tuple[Model, ...]  # every model of the lock, whatever its strategy
    labels: tuple[tuple[str, str], ...]  # the labels verify checks

    def facts(self) -> EnvFacts:
        """verify's expectation. It needs the locked base for the platform: its layers are the anchor."""
        if self.base is None:
            raise ImageError(
                "the lock has no base image to verify against; add [base] to the spec and re-lock"
            )
        base = self.base.platform
        if base is None:
            raise ImageError(
                f"the lock has no base for platform {self.platform}; it has "
                f"{', '.join(p.platform for p in self.base.locked.platforms)}"
            )
        apt = sorted((*self.base_packages, *self.apt), key=lambda d: (d.fact.name, d.fact.architecture))
        return EnvFacts(
            layer_diff_ids=base.diff_ids,
            os_id=base.os_id,
            os_version=base.os_version,
            architecture=self.architecture,
            glibc=base.glibc,
            interpreters=(self.interpreter,),
            apt=tuple(d.fact for d in apt),
            python_dists=tuple(d.fact for d in self.python),
            cuda=tuple(c.fact for c in self.cuda),
            artifacts=tuple(m.fact for m in self.models if m.fact is not None),
            labels=self.labels,
        )


def venv_site(lock: Lock) -> str:
    major, minor = python_tuple(lock.target.python)
    return f"{lock.python.venv}/lib/python{major}.{minor}/site-packages"


def expected_facts(lock: Lock, *, lock_digest: str, platform: str) -> EnvFacts:
    """What an image built from `lock` for `platform` must contain, as EnvFacts."""
    return image_contents(lock, platform, lock_digest=lock_digest).facts()


def image_contents(lock: Lock, platform: str, *, lock_digest: str) -> ImageContents:
    """Everything an image built from `lock` for `platform` holds (see the module docstring)."""
    base = next((p for p in lock.base.platforms if p.platform == platform), None) if lock.base else None
    distro = f"{base.os_id}-{base.os_version}" if base else None
    namespace = base.os_id if base else "debian"
    pins = platform_apt(lock.apt, platform)
    major, minor = python_tuple(lock.target.python)
    tags = target_tags(lock.target, platform)
    environment = marker_environment(lock.target, platform)
    labels = [(LABEL_LOCK, lock_digest)]
    if lock.base is not None:
        labels.append((LABEL_BASE_DIGEST, lock.base.digest))
    return ImageContents(
        platform=platform,
        architecture=DEB_ARCHITECTURES.get(platform, platform),
        base=_base_image(lock.base, base) if lock.base else None,
        base_packages=tuple(
            Deb(fact=p, purl=_deb_purl(namespace, p, distro))
            for p in sorted(base.packages if base else (), key=lambda p: (p.name, p.architecture))
            # The closure replaces (upgrades) a base package of its name and architecture.
            if not any(pin.name == p.name and p.architecture in (pin.architecture, "all") for pin in pins)
        ),
        apt=tuple(
            _locked_deb(lock, pin, namespace, distro)
            for pin in sorted(pins, key=lambda p: (p.name, p.architecture))
        ),
        interpreter=InterpreterFact(
            path=f"{lock.python.venv}/bin/python{major}.{minor}", version=lock.target.python
        ),
        python=tuple(
            _dist(lock, pin, tags)
            for pin in sorted(lock.python.packages, key=lambda p: p.name)
            # The build's requirements keep each pin's marker, so pip skips a pin it excludes here.
            if pin.marker is None or Marker(pin.marker).evaluate(environment)
        ),
        cuda=tuple(_cuda(c) for c in sorted(lock.cuda.components, key=lambda c: (c.name, c.source))),
        models=tuple(Model(locked=m) for m in sorted(lock.models, key=lambda m: m.target)),
        labels=tuple(sorted(labels)),
    )


def _base_image(locked: LockedBase, platform: BasePlatform | None) -> BaseImage:
    qualifiers = {"repository_url": f"{locked.registry}/{locked.repository}"}
    if platform is not None:
        qualifiers["arch"] = DEB_ARCHITECTURES.get(platform.platform, platform.platform)
    digest = platform.manifest_digest if platform else locked.digest
    name = locked.repository.rsplit("/", 1)[-1]
    purl = PackageURL(type="oci", name=name, version=digest, qualifiers=qualifiers)
    return BaseImage(locked=locked, platform=platform, purl=purl.to_string())


def _deb_purl(namespace: str, fact: AptFact, distro: str | None, repository: str | None = None) -> str:
    """A deb purl; `repository` is the third-party repository a pin came from (NVIDIA's CUDA one, ...):
    such a package is not the distro's, so it names its repository_url and no distro (a scanner must not
    look it up in the distro's security tracker)."""
    qualifiers = {"arch": fact.architecture}
    if repository is not None:
        qualifiers["repository_url"] = repository
    elif distro:
        qualifiers["distro"] = distro
    return PackageURL(
        type="deb", namespace=namespace, name=fact.name, version=fact.version, qualifiers=qualifiers
    ).to_string()


def _locked_deb(lock: Lock, pin: AptPin, namespace: str, distro: str | None) -> Deb:
    fact = AptFact(name=pin.name, version=pin.version, architecture=pin.architecture)
    repository = pin.url.rsplit("/", 1)[0] if pin.url is not None else None
    purl = _deb_purl(namespace, fact, distro, repository)
    return Deb(fact=fact, purl=purl, pin=pin, download=deb_download(lock, pin))


def _dist(lock: Lock, pin: PythonPin, tags: frozenset[Tag]) -> Dist:
    qualifiers = {} if pin.index.rstrip("/") == DEFAULT_INDEX_URL else {"repository_url": pin.index}
    return Dist(
        fact=DistFact(name=pin.name, version=pin.version, site=venv_site(lock)),
        pin=pin,
        file=_installed_file(pin, tags),
        purl=PackageURL(type="pypi", name=pin.name, version=pin.version, qualifiers=qualifiers).to_string(),
    )


def _installed_file(pin: PythonPin, tags: frozenset[Tag]) -> PythonFile | None:
    """The wheel of `pin` that installs where `tags` do (what `mlenv build` installs), else the sdist."""
    wheel = next((w for w in sorted(pin.wheels, key=lambda w: w.name) if wheel_installs(w.name, tags)), None)
    return wheel or pin.sdist


def _cuda(component: CudaComponent) -> Cuda:
    name = "cuda-runtime" if component.name == "runtime" else component.name
    purl = PackageURL(type="generic", namespace="nvidia", name=name, version=component.version)
    return Cuda(fact=component, name=name, purl=purl.to_string())


def deb_download(lock: Lock, pin: AptPin) -> str | None:
    """Where the build fetches the .deb of `pin` first (its recorded URL for a third-party repository, else
    the first Debian-layout mirror's pool path): the same order `mlenv build` tries."""
    urls = deb_urls(lock.apt.sources, pin)
    return urls[0] if urls else None


# ---------------------------------------------------------------------------- every file above the base


@dataclass(frozen=True, kw_only=True)
class FileExpectation:
    """Every path the layers above the base may hold, each with what vouches for it, the content rules of
    the files a build step generates, and what could not be expected (a drift of its own: nothing is
    skipped silently)."""

    files: tuple[ExpectedFile, ...]
    content_checks: Mapping[str, ContentCheck]
    unexplained: tuple[Drift, ...] = ()


def expected_files(
    lock: Lock,
    contents: ImageContents,
    *,
    project_dir: Path | None,
    wheel_files: Callable[[Dist], Iterable[ExpectedFile]],
    apt_files: Iterable[ExpectedFile],
) -> FileExpectation:
    """The union of what each pinned source puts above the base: the locked .debs (`apt_files`: their
    files and what dpkg writes for them, verify.debfiles), the locked wheels in the venv (`wheel_files`
    of each pin installed here), the app tree of the project (`project_dir`, filtered by the build's
    own function), the models by their locked sha256, and the files mlenv's own steps generate
    (`step_files`)."""
    files: list[ExpectedFile] = list(apt_files)
    unexplained: list[Drift] = []
    for dist in contents.python:
        files += wheel_files(dist)
    steps, checks = step_files(lock)
    files += steps
    files += _app_files(lock, project_dir, unexplained)
    files += _model_files(lock, project_dir)
    return FileExpectation(files=tuple(files), content_checks=checks, unexplained=tuple(unexplained))


def _app_files(lock: Lock, project_dir: Path | None, unexplained: list[Drift]) -> list[ExpectedFile]:
    if not lock.app.copy:
        return []
    workdir = "/" + lock.app.workdir.strip("/")
    missing = [c for c in lock.app.copy if project_dir is None or not (project_dir / c).exists()]
    if missing:
        where = "no project directory was given" if project_dir is None else f"not found in {project_dir}"
        for relative in missing:
            unexplained.append(
                Drift(
                    layer="files",
                    kind="unverified",
                    subject=f"{workdir}/{relative.strip('/')}",
                    expected=f"the project's {relative} (app.copy), to compare the image's copy with",
                    actual=where,
                )
            )
        return []
    assert project_dir is not None
    return [
        ExpectedFile(
            path="/" + entry.arcname,
            kind="dir" if entry.source is None else "file",
            source=f"app:{entry.arcname.removeprefix(workdir.strip('/') + '/')}",
            sha256=None if entry.source is None else file_sha256(entry.source),
            size=None if entry.source is None else entry.source.stat().st_size,
            mode=entry_mode(entry),
            uid=0,
            gid=0,
        )
        for entry in app_entries(lock, project_dir)
    ]


def _model_files(lock: Lock, project_dir: Path | None) -> list[ExpectedFile]:
    """Baked models by the lock's sha256 (the project's copy gives only the mode and parent dirs)."""
    files: list[ExpectedFile] = []
    for model in lock.models:
        if model.strategy != "bake":
            continue
        target = "/" + model.target.strip("/")
        source = project_dir / model.source if project_dir is not None else None
        executable = source is not None and source.is_file() and bool(source.stat().st_mode & 0o100)
        files.append(
            ExpectedFile(
                path=target,
                kind="file",
                source=f"model:{target}",
                sha256=model.sha256.removeprefix("sha256:"),
                size=model.size,
                mode=0o755 if executable else 0o644,
                uid=0,
                gid=0,
            )
        )
    return files


# What mlenv's own Dockerfile steps write into the final image, besides the sources above. Each entry
# says which step makes it and why; content that depends on the base (the account files) is judged by
# a rule against the base's own copy, not by a fixed hash.
#
# RUN useradd (render.dockerfile user step): useradd --system --user-group appends the locked user to
#   /etc/passwd, /etc/group, /etc/shadow and /etc/gshadow, saves the previous passwd/group/shadow/gshadow
#   as the `-` backups (the step removes the backups the base did not have: USER_VOLATILE), and takes
#   /etc/.pwd.lock (an empty lock file, 0600). `install -d` makes the user's HOME and HOME/.cache, owned
#   by the user; `mkdir -p` makes the workdir.
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def step_files(lock: Lock) -> tuple[list[ExpectedFile], dict[str, ContentCheck]]:
    """The files of mlenv's own steps (see ACCOUNT_FILES above) and the rule each one's content follows."""
    user = lock.app.user
    # useradd writes the day of SOURCE_DATE_EPOCH as the last password change; day 0 it writes empty
    # (shadow-utils: 0 would force a password change, so it disables aging instead).
    epoch_days = source_date_epoch(lock) // 86400 or ""
    files = [
        ExpectedFile(path=path, kind="file", source="step:useradd", check="generated")
        for path in ACCOUNT_FILES
    ]
    files += [
        ExpectedFile(path=f"{path}-", kind="file", source="step:useradd", check="generated")
        for path in ACCOUNT_FILES
        if f"{path}-" in USER_VOLATILE
    ]
    files.append(
        ExpectedFile(
            path="/etc/.pwd.lock",
            kind="file",
            source="step:useradd",
            sha256=EMPTY_SHA256,
            size=0,
            mode=0o600,
            uid=0,
            gid=0,
        )
    )
    files.append(
        ExpectedFile(
            path="/" + lock.app.workdir.strip("/"),
            kind="dir",
            source="step:useradd (mkdir -p)",
            mode=0o755,
            uid=0,
            gid=0,
        )
    )
    # `install -d -o USER -g USER` makes the user's HOME and its .cache (the group's id is useradd's
    # choice, judged with the account files).
    files += [
        ExpectedFile(path=path, kind="dir", source="step:useradd (install -d)", mode=0o755, uid=APP_UID)
        for path in (home_dir(lock), f"{home_dir(lock)}/.cache")
    ]
    if needs_entrypoint(lock):
        script = entrypoint_script(lock).encode()
        files.append(
            ExpectedFile(
                path=ENTRYPOINT_PATH,
                kind="file",
                source="step:entrypoint",
                sha256=hashlib.sha256(script).hexdigest(),
                size=len(script),
                uid=0,
                gid=0,
            )
        )
    # The user's primary group is allocated by useradd among the system ids, so its number is read from
    # /etc/group and must be the same in every file that names it.
    checks: dict[str, ContentCheck] = {
        "/etc/passwd": _appended(
            "/etc/passwd",
            rf"{re.escape(user)}:x:{APP_UID}:(?P<gid>\d+)::{re.escape(home_dir(lock))}:/usr/sbin/nologin",
        ),
        "/etc/group": _appended("/etc/group", rf"{re.escape(user)}:x:(?P<gid>\d+):"),
        "/etc/shadow": _appended("/etc/shadow", rf"{re.escape(user)}:!:{epoch_days}::::::"),
        "/etc/gshadow": _appended("/etc/gshadow", rf"{re.escape(user)}:!::"),
    }
    for path in ACCOUNT_FILES:
        checks[f"{path}-"] = _backup_of(path)
    return files, checks


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "surrogateescape").splitlines()


def _appended(path: str, line: str) -> ContentCheck:
    """The base's `path` with exactly one line added at its end, matching `line` (and, for the gid, the
    group useradd made)."""
    pattern = re.compile(line)

    def check(found: bytes, base: Lookup, upper: Lookup) -> str | None:
        before = base(path)
        if before is None:
            return f"the base has no {path} to add the user to"
        have, had = _lines(found), _lines(before)
        if have[:-1] != had or not found.endswith(b"\n"):
            return f"not the base's {path} plus one line (lines changed: {_changed(had, have[:-1])})"
        match = pattern.fullmatch(have[-1]) if have else None
        if match is None:
            return f"last line {have[-1]!r} is not the locked user's" if have else "empty"
        if "gid" in pattern.groupindex and path != "/etc/group":
            group = upper("/etc/group")
            gid = _group_id(group, pattern.pattern.split(":", 1)[0]) if group is not None else None
            if gid != match["gid"]:
                return f"the user's group id {match['gid']} is not its group's ({gid})"
        return None

    return check


def _group_id(group: bytes, name: str) -> str | None:
    for entry in _lines(group):
        fields = entry.split(":")
        if len(fields) >= 3 and fields[0] == name.replace("\\", ""):
            return fields[2]
    return None


def _backup_of(path: str) -> ContentCheck:
    """useradd's backup `path-`: the base's `path` as it was before the user was added."""

    def check(found: bytes, base: Lookup, upper: Lookup) -> str | None:
        before = base(path)
        if before is None or found != before:
            return f"not the base's {path}"
        return None

    return check


def _changed(had: list[str], have: list[str]) -> int:
    return sum(1 for a, b in zip(had, have, strict=False) if a != b) + abs(len(had) - len(have))
