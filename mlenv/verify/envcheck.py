"""`mlenv check`: a Python environment on this machine against the lock, through verify's compare engine.

The expectation is the lock's projection (verify.expected.image_contents) cut down to what a laptop's
environment can be held to: the interpreter and the Python pins. The base, apt, CUDA, models and the
image config are the image's, and a laptop has none of them (`mlenv verify` checks those).

Rules, each stated where it applies:
- The interpreter: another major or minor version is a drift; a patch difference is a note, since a
  laptop seldom has the base image's exact patch release, and patch releases keep the ABI and the wheels.
- Every pin whose marker admits the lock's platform is expected, at its version; a distribution the
  environment has and the lock does not is an extra, except an environment's own installer tooling
  (`TOOLING`) when the lock does not pin it: `python -m venv` and virtualenv seed it, mlenv's build
  uninstalls it from the image's venv, and it is listed in a note, never dropped silently.
- `--files`: each distribution's files against its own RECORD; and where the installed wheel is a file
  the lock pins, every file the wheel installs into the site directory against the locked wheel's bytes,
  so a file changed together with its RECORD line is caught. The installed wheel is the locked file when
  its name, version and WHEEL tags are a locked wheel's filename (an index never takes a filename twice)
  and its WHEEL file is that wheel's byte for byte (a wheel built here from the sdist has the same tags,
  not the same WHEEL). A distribution the laptop got another wheel of (another platform's, or one built
  from the sdist) is named in a note with why: it could only be checked against its own RECORD.
  Scripts in bin/ and byte code are the installer's work and are held to RECORD alone.
"""

from __future__ import annotations

import dataclasses
import platform as host_platform
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, parse_tag
from packaging.utils import parse_wheel_filename

from mlenv.model.facts import DistFact, EnvFacts, InterpreterFact
from mlenv.model.lock import Lock, PythonFile, PythonPin
from mlenv.model.report import Drift, Layer, Report
from mlenv.observe.fs.rootfs import ImageFS, NotKeptError
from mlenv.observe.localenv import LocalDists, LocalEnv
from mlenv.sources.cas import ContentStore
from mlenv.verify.compare import compare, drift_line
from mlenv.verify.expected import image_contents
from mlenv.verify.formats import as_data
from mlenv.verify.wheelfiles import PIP_GENERATED, wheel_expectation

# An environment's own installer tooling: seeded into every venv by `python -m venv` (pip; setuptools
# before 3.12), virtualenv and `uv venv --seed` (pip, setuptools, wheel). Compared only when locked.
TOOLING = ("pip", "setuptools", "wheel")
# Docker platform of the lock <- this machine's architecture, as platform.machine() names it.
MACHINES = {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64"}

WheelSource = Callable[[PythonFile], Path]  # a locked wheel -> its bytes on disk, hash-checked


@dataclass(frozen=True, kw_only=True)
class EnvCheck:
    environment: LocalEnv
    platform: str  # the lock's platform the pins' markers and wheels were judged for
    report: Report
    notes: tuple[str, ...] = ()


def lock_platform(
    lock: Lock, *, system: str | None = None, machine: str | None = None
) -> tuple[str, str | None]:
    """The lock's platform this machine matches, else the lock's first with a note saying so."""
    system = system or host_platform.system()
    machine = (machine or host_platform.machine()).lower()
    wanted = MACHINES.get(machine)
    if system == "Linux" and wanted in lock.target.platforms:
        return wanted, None
    chosen = lock.target.platforms[0]
    return chosen, (
        f"this machine is {system} {machine}, which the lock does not target: pins and their markers "
        f"were judged for {chosen}"
    )


def check_environment(
    lock: Lock,
    env: LocalEnv,
    found: LocalDists,
    *,
    lock_digest: str,
    files: bool,
    fs: ImageFS,
    wheel_source: WheelSource | None = None,
) -> EnvCheck:
    """`env` (whose distributions are `found`) against `lock`. With `files`, `found` must have been read
    with check_files=True, and `wheel_source` gives the locked wheels (default: the cache, else fetched)."""
    chosen, platform_note = lock_platform(lock)
    notes = [platform_note] if platform_note else []
    notes += env.notes
    contents = image_contents(lock, chosen, lock_digest=lock_digest)
    pinned = {d.pin.name for d in contents.python}
    dists = []
    skipped = []
    for dist in found.dists:
        if dist.name in TOOLING and dist.name not in pinned:
            skipped.append(f"{dist.name} {dist.version}")
        else:
            dists.append(dist)
    if skipped:
        notes.append(
            f"not compared: {', '.join(skipped)} (the environment's own installer tooling, "
            f"{'/'.join(TOOLING)}, which the lock does not pin; mlenv's build removes it from the image)"
        )
    notes += [_shadowed_note(d, found) for d in found.shadowed]
    if files:
        pins = {d.pin.name: d.pin for d in contents.python}
        dists, record_only = _against_locked_wheels(
            fs, dists, pins, wheel_source or cached_wheel, python=_minor(env.version)
        )
        if record_only:
            notes.append(
                "checked against their own RECORD only (the installed wheel is not a file the lock pins): "
                + ", ".join(record_only)
            )
    # One site stands for the whole environment: compare keys distributions by site, and an
    # environment's sites are one import path (the first of each name wins, above).
    site = env.location
    expected = EnvFacts(
        interpreters=(InterpreterFact(path=env.interpreter, version=lock.target.python),),
        python_dists=tuple(
            DistFact(name=d.fact.name, version=d.fact.version, site=site) for d in contents.python
        ),
    )
    actual = EnvFacts(
        interpreters=(InterpreterFact(path=env.interpreter, version=env.version),),
        python_dists=tuple(dataclasses.replace(d, site=site) for d in dists),
    )
    compared = compare(expected, actual, subject=f"{env.kind} {env.location}")
    drifts = []
    for drift in compared.drifts:
        if _patch_apart(drift):
            notes.append(
                f"python {drift.actual} here, {drift.expected} in the lock: "
                "a patch release apart, which is not a drift"
            )
        else:
            drifts.append(drift)
    layers: tuple[Layer, ...] = ("python-interpreter", "python", *(("python-files",) if files else ()))
    report = Report(subject=compared.subject, layers=layers, drifts=tuple(drifts))
    return EnvCheck(environment=env, platform=chosen, report=report, notes=tuple(notes))


def _shadowed_note(dist: DistFact, found: LocalDists) -> str:
    first = next(d for d in found.dists if d.name == dist.name)
    if first.site == dist.site:
        return f"{dist.name}: a second metadata directory in {dist.site} ({dist.version}), not compared"
    return (
        f"{dist.name} {dist.version} in {dist.site} is hidden by {first.version} in {first.site}, "
        "earlier on the path: only that one was compared"
    )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _patch_apart(drift: Drift) -> bool:
    return (
        drift.layer == "python-interpreter"
        and drift.kind == "version"
        and drift.expected is not None
        and drift.actual is not None
        and _minor(drift.expected) == _minor(drift.actual)
    )


def cached_wheel(wheel: PythonFile) -> Path:
    """The locked wheel from the content-addressed cache, fetched by its locked URL when absent (a wheel
    built on the host has none: `mlenv build` or `mlenv lock` puts it into the cache)."""
    urls = [wheel.url] if wheel.url else []
    return ContentStore().fetch_first(wheel.sha256, urls, what=wheel.name, filename=wheel.name)


def installed_tags(fs: ImageFS, dist: DistFact) -> frozenset[Tag] | None:
    """The tags the installed wheel's WHEEL file lists (None: no WHEEL, so no wheel installed it)."""
    info = next(
        (
            e.path.split("/")[0]
            for e in dist.record
            if e.path.count("/") == 1 and e.path.endswith(".dist-info/RECORD")
        ),
        None,
    )
    if info is None:
        return None
    try:
        text = fs.read_text(posixpath.join(dist.site, info, "WHEEL"))
    except (OSError, NotKeptError, UnicodeDecodeError):
        return None
    tags: set[Tag] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Tag" and value.strip():
            tags |= parse_tag(value.strip())
    return frozenset(tags) or None


def locked_wheel(pin: PythonPin, tags: frozenset[Tag]) -> PythonFile | None:
    """The pin's wheel whose filename carries exactly `tags`."""
    return next((w for w in pin.wheels if frozenset(parse_wheel_filename(w.name)[3]) == tags), None)


def _against_locked_wheels(
    fs: ImageFS,
    dists: Iterable[DistFact],
    pins: dict[str, PythonPin],
    wheel_source: WheelSource,
    *,
    python: str,
) -> tuple[list[DistFact], list[str]]:
    """Each distribution with the locked wheel's files checked, where it is the locked wheel; and those
    left to their own RECORD, each with why ("another platform's wheel", ...)."""
    checked: list[DistFact] = []
    record_only: list[str] = []
    for dist in dists:
        pin = pins.get(dist.name)
        if pin is None or pin.version != dist.version:
            checked.append(dist)  # an extra or another version: a drift already, nothing locked to hold it to
            continue
        tags = installed_tags(fs, dist)
        wheel = locked_wheel(pin, tags) if tags is not None else None
        held = _wheel_files(fs, dist, wheel_source(wheel), wheel, python=python) if wheel else None
        if held is not None:
            checked.append(held)
            continue
        if tags is None:
            why = "no WHEEL file: not installed from a wheel"
        elif wheel is None:
            why = f"a wheel tagged {'.'.join(sorted(str(t) for t in tags))}, which the lock does not pin"
        else:
            why = "another build of the locked wheel's tags: its WHEEL file is not the locked wheel's"
        record_only.append(f"{dist.name} {dist.version} ({why})")
        checked.append(dist)
    return checked, record_only


def _wheel_files(
    fs: ImageFS, dist: DistFact, path: Path, wheel: PythonFile, *, python: str
) -> DistFact | None:
    """`dist` with every file the locked wheel installs into its site directory checked against the
    wheel's bytes (those pip or uv generate, INSTALLER, REQUESTED, RECORD, are judged by RECORD); None
    when the installed WHEEL file is not the locked wheel's (a wheel built here from the sdist)."""
    site = dist.site
    prefix = posixpath.dirname(posixpath.dirname(posixpath.dirname(site)))
    expectation = wheel_expectation(
        path,
        site=site,
        scripts_dir=f"{prefix}/bin",
        interpreter=f"{prefix}/bin/python",
        python=python,
        data_dir=prefix,
        headers_dir=f"{prefix}/include/site/python{python}/{dist.name}",
        compile_root=site,
        source=f"wheel:{wheel.name}",
        compiles=lambda source, where: False,  # byte code is the installer's choice: RECORD judges it
    )
    expected = {
        item.path: item.sha256
        for item in expectation.files
        if item.kind == "file"
        and item.check == "bytes"
        and item.sha256 is not None
        # Scripts and data files land outside the site and the installer rewrites some (shebangs);
        # the files the installer writes into the dist-info are its own. RECORD judges both.
        and item.path.startswith(site + "/")
        and not _installer_file(posixpath.relpath(item.path, site))
    }
    marker = next(
        (p for p in expected if p.endswith(".dist-info/WHEEL") and p.count("/") == site.count("/") + 2), None
    )
    if marker is None or _sha256(fs, marker) != expected[marker]:
        return None
    modified, missing = set(dist.modified_files), set(dist.missing_files)
    for where, sha256 in expected.items():
        relative = posixpath.relpath(where, site)
        found = _sha256(fs, where)
        if found is None:
            missing.add(relative)
        elif found != sha256:
            modified.add(relative)
    return dataclasses.replace(
        dist, modified_files=tuple(sorted(modified)), missing_files=tuple(sorted(missing - modified))
    )


def _installer_file(relative: str) -> bool:
    head, name = posixpath.split(relative)
    return head.endswith(".dist-info") and "/" not in head and name in PIP_GENERATED


def _sha256(fs: ImageFS, path: str) -> str | None:
    """The file's sha256; None when it is not there; "" when it is there but no regular file."""
    try:
        info = fs.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return fs.sha256(path) if info.is_regular else ""
    except (OSError, NotKeptError):
        return ""


# ---------------------------------------------------------------------------- how a check reads


def as_text(result: EnvCheck, *, lock: str) -> str:
    report = result.report
    lines = [f"check {result.environment.description} against {lock}"]
    for layer in report.layers:
        drifts = [d for d in report.drifts if d.layer == layer]
        lines.append(f"  [{'ok' if not drifts else 'DRIFT'}] {layer}")
        lines += [f"      {drift_line(d)}" for d in drifts]
    lines += [f"  note: {note}" for note in result.notes]
    verdict = "matches the lock" if report.ok else f"{len(report.drifts)} drift(s) from the lock"
    lines.append(f"{report.subject}: {verdict}")
    return "\n".join(lines) + "\n"


def as_json_data(result: EnvCheck) -> dict[str, object]:
    env = result.environment
    return {
        **as_data(result.report),
        "environment": {
            "kind": env.kind,
            "location": env.location,
            "chosen-by": env.chosen_by,
            "interpreter": env.interpreter,
            "python": env.version,
            "sites": list(env.sites),
        },
        "platform": result.platform,
        "notes": list(result.notes),
    }
