"""Wheels built on the host at lock: from an sdist pin, a project directory, or a git commit.

The rule: a build is accepted only when it gives a pure wheel (`py3-none-any`, `py2.py3-none-any`),
which installs on the target whatever this host is. A platform wheel built here would carry this
host's CPU and glibc into the image, so it is refused at lock with one line and what to do instead.

Each wheel is built by `pip wheel --no-deps` (build isolation takes the build backend from the spec's
index) with SOURCE_DATE_EPOCH set, so its zip entries carry fixed times; setuptools and the common
backends then give the same bytes on every build. The wheel goes into the content store by its
sha256, where `mlenv build` takes it with no network, and a small memo (source key -> wheel) lets a
re-lock reuse it instead of building again, so a lock names a wheel the store holds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from mlenv.errors import ResolutionError, SourceError
from mlenv.files import file_sha256, work_directory, write_atomic
from mlenv.model.lock import PinSource, PythonFile
from mlenv.model.spec import SourceRequirement
from mlenv.model.urls import redact
from mlenv.sources.cas import ContentStore
from mlenv.spec import tree_files

# 1980-01-01: the earliest time a zip entry can carry, used by every reproducible wheel build.
SOURCE_DATE_EPOCH = "315532800"
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
BUILD_TIMEOUT = 600
C_CODE_HINT = (
    "pin a version that has a wheel for the target, or build the wheel yourself and serve it from "
    "an index listed in [python] extra-index-urls"
)


@dataclass(frozen=True, kw_only=True)
class BuiltWheel:
    name: str  # canonical project name, from the wheel's file name
    version: str
    file: PythonFile  # hash_source "built"
    requires_dist: tuple[str, ...]


class HostBuilder:
    """Builds pure wheels on the host into `store`, with build dependencies from the spec's indexes."""

    def __init__(
        self,
        store: ContentStore,
        *,
        project_dir: Path,
        python_version: str,
        index_url: str,
        extra_index_urls: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.project_dir = project_dir
        self.python_version = python_version
        self.index_url = index_url
        self.extra_index_urls = extra_index_urls

    def from_sdist(self, name: str, version: str, sdist: PythonFile) -> BuiltWheel:
        """The wheel of a pin that has only an sdist: the sdist fetched by its locked sha256, then built."""
        key = f"sdist-{sdist.sha256}"
        reused = self._reuse(key, "sdist")
        if reused is not None:
            return reused
        archive = self.store.fetch_first(
            sdist.sha256, (sdist.url,), what=f"{name} {version} ({sdist.name})", filename=sdist.name
        )
        with work_directory("hostbuild") as work:
            source = Path(work, sdist.name)
            shutil.copyfile(archive, source)  # pip names the build by the file name; the store's is a hash
            built = self._build(source, f"{name}=={version} (sdist only)", "sdist", Path(work, "out"))
        self._check_is(built, name, version, f"{name}=={version}")
        return self._remember(key, built)

    def from_source(self, requirement: SourceRequirement) -> tuple[BuiltWheel, PinSource]:
        if requirement.kind == "directory":
            return self._from_directory(requirement)
        return self._from_vcs(requirement)

    def _from_directory(self, requirement: SourceRequirement) -> tuple[BuiltWheel, PinSource]:
        root = self.project_dir / requirement.location
        source = PinSource(kind="directory", url=requirement.location, tree_sha256=requirement.tree_sha256)
        key = f"directory-{requirement.tree_sha256}-{self.python_version}"
        reused = self._reuse(key, "directory")
        if reused is not None:
            return reused, source
        with work_directory("hostbuild") as work:
            # A copy of the files the tree hash covers: an in-tree build would write build/ and
            # *.egg-info into the project, and would read files the hash does not cover.
            copy = Path(work, "src")
            for path in tree_files(root):
                target = copy / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.is_symlink():
                    target.symlink_to(os.readlink(path))
                else:
                    shutil.copy2(path, target)
            built = self._build(copy, f"./{requirement.location}", "directory", Path(work, "out"))
        return self._remember(key, built), source

    def _from_vcs(self, requirement: SourceRequirement) -> tuple[BuiltWheel, PinSource]:
        url = requirement.location
        commit = resolve_git_ref(url, requirement.revision)
        source = PinSource(kind="vcs", url=url, requested_revision=requirement.revision, commit_id=commit)
        key = f"vcs-{commit}-{self.python_version}"
        reused = self._reuse(key, "vcs")
        if reused is None:
            with work_directory("hostbuild") as work:
                checkout = Path(work, "src")
                _git("clone", "--quiet", "--no-checkout", url, str(checkout), what=url)
                _git("-C", str(checkout), "checkout", "--quiet", commit, what=f"{url}@{commit}")
                built = self._build(checkout, f"{redact(url)}@{commit[:12]}", "vcs", Path(work, "out"))
            reused = self._remember(key, built)
        if requirement.name is not None and reused.name != requirement.name:
            raise ResolutionError(
                f"{requirement.name} @ git+{redact(url)}: the commit {commit} builds {reused.name}, "
                f"not {requirement.name}"
            )
        return reused, source

    def _build(self, source: Path, what: str, built_from: str, out: Path) -> BuiltWheel:
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--isolated",  # no pip.conf or PIP_* of this host decides what is built
            "--disable-pip-version-check",
            "--quiet",
            "--index-url",
            self.index_url,
            "--wheel-dir",
            str(out),
            str(source),
        ]
        for extra in self.extra_index_urls:
            command[-3:-3] = ["--extra-index-url", extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env |= {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0"}
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, env=env, check=False, timeout=BUILD_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise ResolutionError(f"{what}: the wheel build took over {BUILD_TIMEOUT} s; stopped") from None
        wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
        if result.returncode != 0 or len(wheels) != 1:
            lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
            raise ResolutionError(
                f"{what}: cannot build a wheel on this host: " + (" ".join(lines[-2:]) or "no message"),
                hint=C_CODE_HINT,
            )
        wheel = wheels[0]
        name, version, tags = _wheel_name(wheel.name)
        if any(tag.abi != "none" or tag.platform != "any" for tag in tags):
            raise ResolutionError(
                f"{what} has C code: built on this host it is {wheel.name}, which would carry this "
                "host's CPU and glibc into the image",
                hint=C_CODE_HINT,
            )
        requires_dist, requires_python = _metadata(wheel)
        if requires_python is not None and self.python_version not in _specifier(requires_python, what):
            raise ResolutionError(
                f"{what} requires Python {requires_python}, the target is {self.python_version}"
            )
        sha256 = file_sha256(wheel)
        with wheel.open("rb") as handle:
            self.store.put_stream(sha256, iter(lambda: handle.read(1 << 20), b""), what=wheel.name)
        return BuiltWheel(
            name=name,
            version=version,
            file=PythonFile(
                name=wheel.name,
                url="",
                size=wheel.stat().st_size,
                sha256=sha256,
                hash_source="built",
                built_from=built_from,  # type: ignore[arg-type]
            ),
            requires_dist=requires_dist,
        )

    def _memo(self, key: str) -> Path:
        return self.store.root / "built" / key

    def _reuse(self, key: str, built_from: str) -> BuiltWheel | None:
        """The wheel an earlier lock built from this very source, when the store still holds it."""
        try:
            filename, sha256 = self._memo(key).read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            return None
        path = self.store.cached(sha256)
        if path is None:
            return None
        name, version, _ = _wheel_name(filename)
        requires_dist, _ = _metadata(path)
        return BuiltWheel(
            name=name,
            version=version,
            file=PythonFile(
                name=filename,
                url="",
                size=path.stat().st_size,
                sha256=sha256,
                hash_source="built",
                built_from=built_from,  # type: ignore[arg-type]
            ),
            requires_dist=requires_dist,
        )

    def _remember(self, key: str, built: BuiltWheel) -> BuiltWheel:
        write_atomic(self._memo(key), f"{built.file.name} {built.file.sha256}\n".encode(), durable=False)
        return built

    @staticmethod
    def _check_is(built: BuiltWheel, name: str, version: str, what: str) -> None:
        if built.name != canonicalize_name(name) or built.version != version:
            raise ResolutionError(f"{what}: its sdist builds {built.file.name}, another package or version")


def resolve_git_ref(url: str, revision: str | None) -> str:
    """The full commit `revision` names on the remote now (None: its HEAD); a full commit as it is.

    A short commit cannot be looked up without fetching the whole history, and a ref the remote does
    not advertise names nothing: both are refused with the fix."""
    if revision is not None and FULL_COMMIT.match(revision):
        return revision
    wanted = revision or "HEAD"
    output = _git("ls-remote", url, wanted, what=url)
    refs: dict[str, str] = {}
    for line in output.splitlines():
        commit, _, ref = line.partition("\t")
        refs[ref] = commit
    for ref in (wanted, f"refs/tags/{wanted}^{{}}", f"refs/tags/{wanted}", f"refs/heads/{wanted}"):
        if ref in refs:
            return refs[ref]
    raise ResolutionError(
        f"git+{redact(url)}@{wanted}: the remote has no branch or tag {wanted!r}",
        hint="name a branch, a tag or a full 40-hex commit after the last @",
    )


def _git(*args: str, what: str) -> str:
    env = os.environ | {"GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, env=env, check=False, timeout=300
        )
    except FileNotFoundError:
        raise SourceError("git is not installed: a VCS requirement needs it on the host") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {args[0]} {redact(what)}: no answer in 300 s") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        raise SourceError(f"git {args[0]} {redact(what)} failed: {lines[-1] if lines else 'no message'}")
    return result.stdout


def _wheel_name(filename: str) -> tuple[str, str, frozenset[Tag]]:
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        raise ResolutionError(f"the build wrote {filename!r}, which is not a wheel file name") from None
    return str(name), str(version), tags


def _metadata(wheel: Path) -> tuple[tuple[str, ...], str | None]:
    """Requires-Dist and Requires-Python of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ResolutionError(f"{wheel.name} has no single .dist-info/METADATA")
        message = BytesParser().parsebytes(archive.read(names[0]), headersonly=True)
    return tuple(str(v) for v in message.get_all("Requires-Dist") or ()), message.get("Requires-Python")


def _specifier(text: str, what: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ResolutionError(f"{what}: Requires-Python {text!r} is not a version specifier") from None


def runtime_requirements(requires_dist: tuple[str, ...]) -> tuple[str, ...]:
    """What a built wheel asks the resolver for: its Requires-Dist without those of its extras."""
    kept = []
    for line in requires_dist:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise ResolutionError(
                f"a built wheel declares Requires-Dist {line!r}, not a requirement"
            ) from None
        if requirement.marker is None or "extra" not in str(requirement.marker):
            kept.append(str(requirement))
    return tuple(kept)
