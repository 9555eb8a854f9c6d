"""verify's file accounting put together: the lock's pinned artifacts -> every expected file above the base,
then the image's layers (read once, by the observer) compared with it.

The wheels and .debs are taken from the content-addressed cache by the lock's sha256 (fetched by hash
when absent, from the lock's URLs). What is derived from a wheel (its installed files, and the sha256 of
the checked-hash .pyc of each of its modules as this host's interpreter compiles it) is cached by the
wheel's sha256, and what read_deb finds in a .deb by the .deb's, so a second verify reads neither.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import posixpath
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlenv.errors import BuildError
from mlenv.files import atomic_writer, json_cached
from mlenv.model.debian import deb_urls
from mlenv.model.lock import Lock
from mlenv.model.report import LAYERS, Drift, Report
from mlenv.model.target import python_tuple
from mlenv.observe.fs.rootfs import LayerIndex
from mlenv.sources.cas import ContentStore, cache_root
from mlenv.verify import aptscripts
from mlenv.verify.debfiles import (
    AptContext,
    Checker,
    DebPackage,
    apt_layer,
    package_data,
    package_from_data,
    read_deb,
)
from mlenv.verify.expected import ACCOUNT_FILES, Dist, ImageContents, expected_files
from mlenv.verify.files import ContentCheck, FileView, Lookup, compare_files, file_view
from mlenv.verify.manifest import ExpectedFile, FoundFile
from mlenv.verify.pyc import check_pyc, code_comparison
from mlenv.verify.wheelfiles import Expectation, venv_expectation, venv_wheel_expectation

# Bumped whenever what is derived from a wheel or a .deb changes, so an old cache entry is never read as new.
DERIVED_VERSION = 1
VENV_SCRIPTS = ("/usr/lib/python{v}/venv/scripts/", "/usr/local/lib/python{v}/venv/scripts/")
PYTHONS = ("/usr/local/bin/python3", "/usr/bin/python3")  # what `python3` is on the builder's PATH


@dataclass(kw_only=True)
class Plan:
    """What the accounting needs before the image is read: every expected file, the content rules, and
    which paths' content the layer pass must keep (a few generated files, the venv's byte code)."""

    files: list[ExpectedFile]
    checks: dict[str, ContentCheck]
    unexplained: list[Drift]
    wheels: dict[str, Callable[[], Path]]  # ExpectedFile.source of a wheel -> fetch it (cas.fetch_first)
    renderings: dict[str, tuple[str, ...]]  # generated venv file -> the sha256 of each allowed rendering
    keep_paths: set[str]
    keep_prefixes: tuple[str, ...]
    venv: str
    python: str  # the image's minor, "3.11"
    version: str | None  # the base interpreter's X.Y.Z, as the lock pins it
    debs: list[DebPackage] = field(default_factory=list)
    deb_checks: dict[str, Checker] = field(default_factory=dict)
    # A venv .pyc whose sha256 is the expected one (as this host compiles it), or one check_pyc already
    # accepted for the same source: its content is not needed, so the reader drops it once hashed (see
    # `needed`). By path, the venv's expected byte code; `accepted`: _Verified's keys.
    pyc_expected: dict[str, ExpectedFile] = field(default_factory=dict)
    accepted: frozenset[str] = frozenset()

    @property
    def keep(self) -> _Keep:
        """The layer reader's interest: which paths' content the checks may need."""
        return _Keep(the_plan=self)

    def wants(self, path: str) -> bool:
        return (
            path in self.keep_paths
            or path.startswith(self.keep_prefixes)
            or (path.endswith(".pyc") and path.startswith(self.venv + "/"))
        )

    def needed(self, path: str, digest: bytes) -> bool:
        """Whether the content of `path`, hashed to `digest`, is still needed: not for a .pyc whose
        bytes are already known good. Without this the fraud image's 13,000 venv .pyc (126 MiB) stay
        in memory until the layers are compared."""
        item = self.pyc_expected.get(path)
        if item is None:
            return True
        found = digest.hex()
        # Accepted for this source only: the same bytes accepted for another wheel's file (a test module
        # two pandas releases share) are judged again here, so they must be kept.
        return found != item.sha256 and _Verified.key(found, item) not in self.accepted


@dataclass(frozen=True, kw_only=True)
class _Keep:
    """Plan.wants as the reader's interest, with Plan.needed for content once hashed (rootfs.still_needed)."""

    the_plan: Plan

    def __call__(self, path: str) -> bool:
        return self.the_plan.wants(path)

    def needed(self, path: str, digest: bytes) -> bool:
        return self.the_plan.needed(path, digest)


def _artifact(store: ContentStore, sha256: str, urls: Sequence[str], what: str) -> Path:
    """From the cache, the URLs, then the store's vault (cas.fetch_first), checked against `sha256`."""
    try:
        return store.fetch_first(sha256, urls, what=what, filename=what)
    except BuildError as error:  # every place failed, or bytes that are not the locked ones
        raise _missing_artifact(what, error) from None


def _missing_artifact(what: str, error: Exception | None) -> Exception:
    from mlenv.errors import ImageError

    return ImageError(
        f"cannot verify the image's files: {what} is not in the cache and cannot be fetched ({error})"
    )


def plan(
    lock: Lock, contents: ImageContents, *, project_dir: Path | None, store: ContentStore | None = None
) -> Plan:
    store = store or ContentStore()
    major, minor = python_tuple(lock.target.python)
    python = f"{major}.{minor}"
    venv = lock.python.venv
    wheels: dict[str, Callable[[], Path]] = {}
    debs = [
        _derived_deb(store, d.pin.sha256, deb_urls(lock.apt.sources, d.pin), d.pin.filename)
        for d in contents.apt
        if d.pin is not None
    ]
    # No apt packages, no system stage (render.dockerfile): none of its generated files are expected.
    apt_files, deb_checks = apt_layer(debs, architecture=contents.architecture) if debs else ([], {})

    renderings: dict[str, tuple[str, ...]] = {}

    def wheel_files(dist: Dist) -> tuple[ExpectedFile, ...]:
        if dist.file is None or not dist.file.name.endswith(".whl"):
            return ()  # an sdist: the hermetic build refuses it, so nothing of it is expected
        source = f"wheel:{dist.file.name}"
        sha256, urls, filename = dist.file.sha256, [u for u in (dist.file.url,) if u], dist.file.name
        # Fetched (and its cached copy hashed: 0.34 s a verify) only when something reads it, once.
        wheels[source] = fetch = functools.cache(lambda: _artifact(store, sha256, urls, filename))
        derived = _derived_wheel(fetch, sha256, venv=venv, python=python, name=dist.pin.name, source=source)
        renderings.update(derived.generated)
        return derived.files

    expectation = expected_files(
        lock, contents, project_dir=project_dir, wheel_files=wheel_files, apt_files=apt_files
    )
    files = list(expectation.files)
    checks = dict(expectation.content_checks)
    keep_paths = set(ACCOUNT_FILES) | {f"{p}-" for p in ACCOUNT_FILES} | set(deb_checks)
    # The base's venv templates: the activate scripts' renderings are derived from them.
    templates = tuple(p.format(v=python) for p in VENV_SCRIPTS)
    return Plan(
        pyc_expected={f.path: f for f in files if f.check == "pyc"},
        accepted=frozenset(_Verified.load().known),
        files=files,
        checks=checks,
        unexplained=list(expectation.unexplained),
        wheels=wheels,
        renderings=renderings,
        keep_paths=keep_paths,
        keep_prefixes=templates,
        venv=venv,
        python=python,
        version=lock.target.python if lock.target.python.count(".") == 2 else None,
        debs=debs,
        deb_checks=dict(deb_checks),
    )


def _derived_deb(store: ContentStore, sha256: str, urls: Sequence[str], filename: str) -> DebPackage:
    """read_deb of the locked .deb, cached by its sha256: a verify reads no .deb it has read before (the
    fraud image's 11 took 0.22 s of xz each time, measured)."""
    return json_cached(
        cache_root() / "derived" / "debs" / f"{DERIVED_VERSION}-{sha256}.json",
        package_from_data,
        lambda: read_deb(_artifact(store, sha256, urls, filename)),
        package_data,
    )


def _derived_wheel(
    fetch: Callable[[], Path], sha256: str, *, venv: str, python: str, name: str, source: str
) -> Expectation:
    """venv_wheel_expectation of the wheel, with the sha256 of each expected .pyc as this host compiles
    it (when it runs the image's minor): cached by the wheel's sha256 and these parameters; the wheel
    itself is fetched only when they are not."""
    key = hashlib.sha256(
        json.dumps([DERIVED_VERSION, sha256, venv, python, name, source]).encode()
    ).hexdigest()

    def derive() -> Expectation:
        path = fetch()
        derived = venv_wheel_expectation(path, venv=venv, python=python, requirement_name=name, source=source)
        files = list(derived.files)
        if code_comparison(python) != "none":
            files = _with_pyc_hashes(path, files, venv=venv, python=python)
        return Expectation(files=tuple(files), generated=derived.generated)

    return json_cached(
        cache_root() / "derived" / "wheel-files" / f"{key}.json",
        lambda data: Expectation(
            files=tuple(ExpectedFile(**row) for row in data["files"]),
            generated=tuple((p, tuple(d)) for p, d in data["generated"]),
        ),
        derive,
        lambda value: {
            "files": [asdict(f) for f in value.files],
            "generated": [list(g) for g in value.generated],
        },
    )


def _with_pyc_hashes(path: Path, files: list[ExpectedFile], *, venv: str, python: str) -> list[ExpectedFile]:
    """Each checked-hash .pyc's sha256 as py_compile on this host writes it: a .pyc with these exact bytes
    is the byte code of its trusted source, so it needs no further check (others are checked by
    check_pyc, from their content)."""
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    site = f"{venv}/lib/python{python}/site-packages/"
    sources = {f.path: f for f in files}
    out = []
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for item in files:
            if item.check != "pyc" or item.pyc_source is None or not item.pyc_source.startswith(site):
                out.append(item)
                continue
            member = item.pyc_source.removeprefix(site)
            if member not in names or item.pyc_source not in sources:
                out.append(item)
                continue
            data = archive.read(member)
            try:
                code = compile(data, item.pyc_source, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                out.append(item)
                continue
            pyc = _code_to_hash_pyc(code, importlib.util.source_hash(data), True)
            out.append(_replace(item, sha256=hashlib.sha256(pyc).hexdigest()))
    return out


def _replace(item: ExpectedFile, **changes: Any) -> ExpectedFile:
    return dataclasses.replace(item, **changes)


# ---------------------------------------------------------------------------- after the pass


def account(
    the_plan: Plan, indexes: Sequence[LayerIndex], *, base_layers: int, steps: Sequence[str]
) -> list[Drift]:
    """The file drifts of an image whose layers were read (with `the_plan.keep` as interest)."""
    view = file_view(indexes, base_layers=base_layers, steps=steps, keep=the_plan.wants)
    files = [f for f in (_backup(f, view) for f in the_plan.files) if f is not None]
    files = aptscripts.settle(files, the_plan.debs, found=view.files, base=view.base)
    checks = dict(the_plan.checks)
    symlinks = {p: e.link for p, e in view.base.items() if e.kind == "symlink" and e.link}
    symlinks.update({p: f.link for p, f in view.files.items() if f.kind == "symlink" and f.link})
    context = AptContext(
        packages=tuple(the_plan.debs),
        base_file=view.base_content,
        image_paths=frozenset(view.base) | frozenset(view.files),
        symlinks=symlinks,
    )
    for path, checker in the_plan.deb_checks.items():
        checks[path] = _apt_check(checker, context)
    readers: dict[str, zipfile.ZipFile] = {}

    verified = _Verified.load()

    def pyc(found: FoundFile, item: ExpectedFile, fview: FileView) -> str | None:
        if item.sha256 is not None and found.sha256 == item.sha256:
            return None
        if verified.has(found.sha256, item):
            return None
        content = fview.content.get(found.path)
        if content is None:
            return "its content was not kept to check"
        source = _source_of(item, the_plan, readers)
        if source is None:
            return f"no trusted source {item.pyc_source} to check it against"
        # The locked X.Y.Z: check_pyc compares line tables too only when this host runs that release.
        python = the_plan.version or the_plan.python
        problem = check_pyc(content, source, python=python, source_path=item.pyc_source)
        if problem is None:
            verified.add(found.sha256, item)
        return problem

    renderings = dict(the_plan.renderings)
    venv_files = _venv_files(the_plan, view)
    if venv_files is not None:
        files += venv_files.files
        renderings.update(venv_files.generated)
    try:
        drifts = compare_files(files, view, content_checks=checks, pyc_check=pyc, renderings=renderings)
    finally:
        for reader in readers.values():
            reader.close()
        verified.save()
    # A missing baked model is the models layer's drift (the same locked sha256), reported there once; a
    # changed one is reported by both, the files layer naming the layer that changed it.
    models = {f.path for f in files if f.source.startswith("model:")}
    drifts = [d for d in drifts if not (d.subject in models and d.kind == "missing")]
    return [*the_plan.unexplained, *drifts]


class _Verified:
    """The .pyc files check_pyc accepted, by their sha256 and their source: the verdict on exact bytes
    does not change, so a second verify of the same image does not compile the sources again. Kept per
    host interpreter (the comparison compiles with it)."""

    def __init__(self, path: Path, known: set[str]) -> None:
        self.path = path
        self.known = known
        self.added = False

    @classmethod
    def load(cls) -> _Verified:
        import sys

        key = hashlib.sha256(f"{DERIVED_VERSION} {sys.version}".encode()).hexdigest()[:32]
        path = cache_root() / "derived" / "pyc-verified" / f"{key}.json"
        try:
            known = set(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            known = set()
        return cls(path, known)

    @staticmethod
    def key(sha256: str | None, item: ExpectedFile) -> str:
        return f"{sha256} {item.source} {item.pyc_source}"

    def has(self, sha256: str | None, item: ExpectedFile) -> bool:
        return sha256 is not None and self.key(sha256, item) in self.known

    def add(self, sha256: str | None, item: ExpectedFile) -> None:
        if sha256 is not None:
            self.known.add(self.key(sha256, item))
            self.added = True

    def save(self) -> None:
        if not self.added:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(self.path, durable=False) as out:
            out.write(json.dumps(sorted(self.known)).encode())


def _backup(item: ExpectedFile, view: FileView) -> ExpectedFile | None:
    """useradd's `-` backup of an account file exists only where the base had one (the step removes the
    backups it created), and has the mode and owner of the file it copies."""
    primary = item.path.removesuffix("-")
    if item.source != "step:useradd" or not item.path.endswith("-") or primary not in ACCOUNT_FILES:
        return item
    if item.path not in view.base:
        return None
    original = view.base.get(primary)
    if original is None:
        return item
    return _replace(item, mode=original.mode, uid=original.uid, gid=original.gid)


def _apt_check(checker: Callable[[bytes, AptContext], str | None], context: AptContext) -> ContentCheck:
    def check(found: bytes, base: Lookup, upper: Lookup) -> str | None:
        return checker(found, context)

    return check


def _source_of(item: ExpectedFile, the_plan: Plan, readers: dict[str, zipfile.ZipFile]) -> bytes | None:
    """The trusted bytes of a .pyc's source: the wheel member it was installed from."""
    fetch = the_plan.wheels.get(item.source)
    if fetch is None or item.pyc_source is None:
        return None
    reader = readers.get(item.source)
    if reader is None:
        reader = readers[item.source] = zipfile.ZipFile(fetch())
    site = f"{the_plan.venv}/lib/python{the_plan.python}/site-packages/"
    try:
        return reader.read(item.pyc_source.removeprefix(site))
    except KeyError:
        return None


def _venv_files(the_plan: Plan, view: FileView) -> Expectation | None:
    """`python3 -m venv` of the builder stage: its interpreter, version and templates come from the
    locked base (read in the same pass). None when the base has no python3 where the build finds it."""
    executable = next((p for p in PYTHONS if p in view.base), None)
    if executable is None or the_plan.version is None:
        return None
    real = executable
    entry = view.base.get(executable)
    hops = 0
    while entry is not None and entry.kind == "symlink" and entry.link and hops < 40:
        hops += 1
        real = (
            entry.link if entry.link.startswith("/") else posixpath.join(posixpath.dirname(real), entry.link)
        )
        real = posixpath.normpath(real)
        entry = view.base.get(real)
    templates: dict[str, tuple[bytes, int]] = {}
    for root in (p.format(v=the_plan.python) for p in VENV_SCRIPTS):
        for path, found in view.base.items():
            if path.startswith(root) and found.kind == "file" and found.content is not None:
                relative = path.removeprefix(root)
                if relative.count("/") == 1 and relative.split("/")[0] in ("common", "posix"):
                    templates[relative] = (found.content, found.mode)
        if templates:
            break
    return venv_expectation(
        venv=the_plan.venv,
        version=the_plan.version,
        base_executable=executable,
        base_realpath=real,
        templates=templates,
        wheels=bool(the_plan.wheels),
    )


def with_files(report: Report, drifts: Sequence[Drift]) -> Report:
    """`report` with the file accounting's drifts, and the files layer listed as compared.

    A package file that does not match its RECORD is also a files drift (the file or the RECORD is not
    the locked wheel's), which names the absolute path, the layer and both hashes: it is reported there
    once, and the python-files drift about the same path is dropped."""
    layers = tuple(layer for layer in LAYERS if layer in report.layers or layer == "files")
    covered = {d.subject for d in drifts if d.layer == "files"}
    sites = {site for site in (_site_of(path) for path in covered) if site is not None}
    kept = [
        d
        for d in report.drifts
        if not (
            d.layer == "python-files"
            and d.file is not None
            and any(posixpath.normpath(f"{site}/{d.file}") in covered for site in sites)
        )
    ]
    # sorted() is stable: each layer's drifts keep their order.
    merged = sorted([*kept, *drifts], key=lambda d: LAYERS.index(d.layer))
    return dataclasses.replace(report, layers=layers, drifts=tuple(merged))


def _site_of(path: str) -> str | None:
    """The site directory a path is under (`/opt/venv/lib/python3.11/site-packages`), if any."""
    for name in ("/site-packages/", "/dist-packages/"):
        head, found, _rest = path.partition(name)
        if found:
            return head + name.rstrip("/")
    return None


def base_layer_count(lock: Lock, platform: str) -> int:
    """How many bottom layers are the locked base's (their diff_ids are the base layer's to compare)."""
    base = next((p for p in lock.base.platforms if p.platform == platform), None) if lock.base else None
    return len(base.diff_ids) if base is not None else 0
