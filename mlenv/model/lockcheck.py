"""What a lock field may hold, by what it feeds: the grammar every lock is read through. Pure, no IO.

The schema says a field is a string; this says which strings. A lock is data, but its values end up in
Dockerfile instructions, shell words, requirement lines, file names in a build context and URLs that are
fetched, so a hand-edited lock must not be able to smuggle an instruction, a path outside the context or
a fetch from the host into a build. Every grammar is strict (what mlenv itself writes, and what the
tools it feeds accept as one word), and a value outside it is a problem at its key path.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import VERSION_PATTERN

from mlenv.model.lock import AptPin, Lock, LockedModel, PythonFile
from mlenv.model.schema import key_path

Problem = tuple[str, str]  # (key path, what is wrong)

# Control characters end a Dockerfile line, a requirement line or a shell word wherever they appear;
# no lock field has a use for one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# useradd's own default (NAME_REGEX): the user is a word in a shell step and in USER.
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Debian policy 5.6.1 (Source/Package), 5.6.12 (Version) and dpkg-architecture's names.
DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
DEB_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")
DEB_ARCH = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# A pool path below the mirror: segments that start with a letter or digit (so never `.` or `..`),
# percent-escapes allowed (an epoch's colon is `%3a` in pool file names), ending in .deb.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9+._~%-]*"
POOL_FILE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*\.deb")
# PEP 440, as packaging spells it, without the whitespace packaging tolerates around it.
PY_VERSION = re.compile(VERSION_PATTERN, re.VERBOSE | re.IGNORECASE)
# A wheel or sdist file name: one path segment, copied into the build context under this name.
DIST_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Paths inside the image (venv, workdir, model targets, keyrings): absolute, no `.`/`..` segment, and
# only characters no Dockerfile instruction or shell expands (no `$`, quotes, spaces or globs).
_PATH_SEGMENT = r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*|\.[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*"
IMAGE_PATH = re.compile(rf"(?:/(?:{_PATH_SEGMENT}))+")
PROJECT_PATH = re.compile(rf"(?:{_PATH_SEGMENT})(?:/(?:{_PATH_SEGMENT}))*")
# Image references (the distribution spec's grammar, loosely for the reference as the spec wrote it).
REGISTRY = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_REPO_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_REPO_PART}(?:/{_REPO_PART})*")
# [registry/]repository[:tag][@sha256:hex]: no room for a user:password@ in front of the host.
REFERENCE = re.compile(
    rf"(?:{REGISTRY.pattern}/)?{_REPO_PART}(?:/{_REPO_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
PLATFORM = re.compile(r"linux/[a-z0-9]+(?:/v[0-9]+)?")
DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+)*")
WORD = re.compile(r"[A-Za-z0-9._~+-]*")  # os-id, os-version
# A suite, or a flat repository's directory (apt's form: ending in `/`, `/` alone for the URI itself).
SUITE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*/?|/")
COMPONENT = re.compile(r"[A-Za-z0-9._-]+")
TIMESTAMP = re.compile(r"[0-9][0-9TZ:.+-]*")
URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")

# Model facts (model/modelfacts.py): a format name, PEP 503 project names, a version as a file records
# it (not always PEP 440: a format may write "v4"), a detail name such as `opset:ai.onnx`.
MODEL_FORMAT = re.compile(r"[a-z0-9][a-z0-9+._-]{0,63}")
PY_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
PRODUCER_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]{0,63}")
DETAIL_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
MAX_DETAIL = 200
MAX_NOTE = 500

SCHEMES = frozenset({"https", "http", "file"})


def lock_problems(lock: Lock) -> Iterator[Problem]:
    """Every field of `lock` outside its grammar, as (key path, problem), in file order."""
    yield from _control_characters(lock)
    yield from _target_and_base(lock)
    roots = recorded_roots(lock)
    yield from _apt(lock, roots)
    yield from _python(lock, roots)
    yield from _cuda(lock, roots)
    yield from _app(lock)
    yield from _models(lock)


def first_problem(lock: Lock) -> Problem | None:
    return next(lock_problems(lock), None)


def recorded_roots(lock: Lock) -> tuple[str, ...]:
    """The URLs the lock records from the spec (its indexes and apt mirrors): the only places a fetch
    may go over a scheme other than https, or to a loopback host. `lock --check` ties them to the spec."""
    return (
        lock.python.index_url,
        *lock.python.extra_index_urls,
        *(s.mirror for s in lock.apt.sources),
    )


def url_problem(url: str, *, roots: tuple[str, ...], root: bool = False) -> str | None:
    """Why `url` may not be fetched for this lock, or None. A root (recorded from the spec) may use
    any scheme mlenv fetches from; any other URL is https to a non-loopback host, or on a root's host."""
    if re.search(r"\s", url):
        return f"{url!r} contains whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"{url!r} is not a URL ({error})"
    if parts.scheme not in SCHEMES:
        return f"{url!r}: scheme {parts.scheme or '(none)'!r} is not fetched (https, http or file)"
    if parts.username is not None or parts.password is not None:
        return "a URL carries credentials (user:password@); a lock never records them"
    if parts.scheme != "file" and not parts.hostname:
        return f"{url!r} has no host"
    if root:
        return None
    if parts.scheme == "https" and not is_loopback(parts.hostname or ""):
        return None
    place = (parts.scheme, parts.hostname, port)
    for other in roots:
        try:
            theirs = urlsplit(other)
            if (theirs.scheme, theirs.hostname, theirs.port) == place:
                return None
        except ValueError:
            continue
    return (
        f"{url!r} is {'a loopback host' if parts.scheme == 'https' else parts.scheme + '://'}, which only "
        "an index or mirror the spec names may be; anything else is fetched over https"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _control_characters(lock: Lock) -> Iterator[Problem]:
    """Any string anywhere in the lock with a control character (a newline ends a Dockerfile line)."""

    def walk(value: object, path: tuple[str | int, ...]) -> Iterator[Problem]:
        if isinstance(value, str):
            if _CONTROL.search(value):
                yield key_path(path), f"{value!r} contains a control character (newline, tab, NUL, ...)"
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                yield from walk(item, (*path, index))
        elif hasattr(value, "__dataclass_fields__"):
            for name in value.__dataclass_fields__:
                if path == ("app",) and name == "env":
                    continue  # pairs, checked below under their names
                yield from walk(getattr(value, name), (*path, name.replace("_", "-")))

    yield from walk(lock, ())
    for key, env_value in lock.app.env:
        if _CONTROL.search(key) or _CONTROL.search(env_value):
            yield f"app.env.{key!r}", "contains a control character (newline, tab, NUL, ...)"


def reference_problem(reference: str) -> str | None:
    """Why `reference` is not an image reference as a lock holds it, or None. The spec reader asks the
    same question of `[base] image`, so both refuse the same references in the same words."""
    if "@" in reference.split("/", 1)[0]:
        # Never echoed: what stands before the host is a credential (user:password@).
        return "holds credentials before the registry host (user:password@); refused unprinted"
    if not REFERENCE.fullmatch(reference):
        return f"{reference[:200]!r} is not an image reference ([registry/]name[:tag][@sha256:hex])"
    return None


def _match(pattern: re.Pattern[str], value: str | None, key: str, what: str) -> Iterator[Problem]:
    if value is not None and not pattern.fullmatch(value):
        yield key, f"{value!r} is not {what}"


def _target_and_base(lock: Lock) -> Iterator[Problem]:
    for index, platform in enumerate(lock.target.platforms):
        yield from _match(PLATFORM, platform, f"target.platforms[{index}]", "a platform (linux/ARCH)")
    base = lock.base
    if base is None:
        return
    problem = reference_problem(base.reference)
    if problem is not None:
        yield "base.reference", problem
    yield from _match(REGISTRY, base.registry, "base.registry", "a registry host[:port]")
    yield from _match(REPOSITORY, base.repository, "base.repository", "a repository name")
    for p_index, locked in enumerate(base.platforms):
        where = f"base.platforms[{p_index}]"
        yield from _match(PLATFORM, locked.platform, f"{where}.platform", "a platform (linux/ARCH)")
        yield from _match(WORD, locked.os_id, f"{where}.os-id", "an os-release ID")
        yield from _match(WORD, locked.os_version, f"{where}.os-version", "an os-release VERSION_ID")
        yield from _match(DOTTED, locked.glibc, f"{where}.glibc", "a glibc version")
        yield from _match(DOTTED, locked.python, f"{where}.python", "a Python version")
        for index, package in enumerate(locked.packages):
            at = f"{where}.packages[{index}]"
            yield from _match(DEB_NAME, package.name, f"{at}.name", "a Debian package name")
            yield from _match(DEB_VERSION, package.version, f"{at}.version", "a Debian version")
            yield from _match(DEB_ARCH, package.architecture, f"{at}.architecture", "a Debian architecture")


def _apt(lock: Lock, roots: tuple[str, ...]) -> Iterator[Problem]:
    for index, source in enumerate(lock.apt.sources):
        where = f"apt.sources[{index}]"
        problem = url_problem(source.mirror, roots=roots, root=True)
        if problem:
            yield f"{where}.mirror", problem
        yield from _match(SUITE, source.suite, f"{where}.suite", "a suite name")
        for c_index, component in enumerate(source.components):
            yield from _match(COMPONENT, component, f"{where}.components[{c_index}]", "a component name")
        if source.snapshot is not None:
            problem = url_problem(source.snapshot, roots=roots)
            if problem:
                yield f"{where}.snapshot", problem
        yield from _match(TIMESTAMP, source.snapshot_timestamp, f"{where}.snapshot-timestamp", "a timestamp")
        yield from _match(IMAGE_PATH, source.signed_by, f"{where}.signed-by", "an absolute path")
    for index, pin in enumerate(lock.apt.packages):
        yield from _apt_pin(pin, f"apt.packages[{index}]", roots)


def _apt_pin(pin: AptPin, where: str, roots: tuple[str, ...]) -> Iterator[Problem]:
    yield from _match(DEB_NAME, pin.name, f"{where}.name", "a Debian package name")
    yield from _match(DEB_VERSION, pin.version, f"{where}.version", "a Debian version")
    yield from _match(DEB_ARCH, pin.architecture, f"{where}.architecture", "a Debian architecture")
    yield from _match(POOL_FILE, pin.filename, f"{where}.filename", "a .deb path below the mirror (pool/...)")
    if pin.url is not None:
        problem = url_problem(pin.url, roots=roots)
        if problem:
            yield f"{where}.url", problem


def _python(lock: Lock, roots: tuple[str, ...]) -> Iterator[Problem]:
    python = lock.python
    yield from _match(IMAGE_PATH, python.venv, "python.venv", "an absolute path of plain segments")
    try:
        SpecifierSet(python.requires_python)
    except InvalidSpecifier:
        yield "python.requires-python", f"{python.requires_python!r} is not a version specifier"
    for key, url in (
        ("python.index-url", python.index_url),
        *((f"python.extra-index-urls[{i}]", u) for i, u in enumerate(python.extra_index_urls)),
    ):
        problem = url_problem(url, roots=roots, root=True)
        if problem:
            yield key, problem
    for index, pin in enumerate(python.packages):
        where = f"python.packages[{index}]"
        yield from _match(PY_VERSION, pin.version, f"{where}.version", "a PEP 440 version")
        if pin.marker is not None:
            try:
                Marker(pin.marker)
            except InvalidMarker:
                yield f"{where}.marker", f"{pin.marker!r} is not a PEP 508 environment marker"
        problem = url_problem(pin.index, roots=roots)
        if problem:
            yield f"{where}.index", problem
        files = [(f"{where}.wheels[{i}]", w) for i, w in enumerate(pin.wheels)]
        if pin.sdist is not None:
            files.append((f"{where}.sdist", pin.sdist))
        for at, file in files:
            yield from _python_file(file, at, roots)


def _python_file(file: PythonFile, where: str, roots: tuple[str, ...]) -> Iterator[Problem]:
    yield from _match(DIST_FILE, file.name, f"{where}.name", "a file name (one path segment)")
    if (file.hash_source == "built") != (file.built_from is not None):
        yield f"{where}.built-from", 'is given exactly when hash-source is "built"'
    if file.hash_source == "built":
        # Built on the host at lock: the file is in the content store by its sha256, at no URL.
        if file.url:
            yield f"{where}.url", "a wheel built on the host has no URL"
        return
    problem = url_problem(file.url, roots=roots)
    if problem:
        yield f"{where}.url", problem


def _cuda(lock: Lock, roots: tuple[str, ...]) -> Iterator[Problem]:
    if lock.cuda.torch_index is not None:
        problem = url_problem(lock.cuda.torch_index, roots=roots)
        if problem:
            yield "cuda.torch-index", problem


def _app(lock: Lock) -> Iterator[Problem]:
    app = lock.app
    for index, path in enumerate(app.copy):
        yield from _match(PROJECT_PATH, path, f"app.copy[{index}]", "a path inside the project")
    if app.workdir != "/":
        yield from _match(IMAGE_PATH, app.workdir, "app.workdir", "an absolute path of plain segments")
    yield from _match(USER_NAME, app.user, "app.user", "a user name (useradd's [a-z_][a-z0-9_-]*)")
    if app.port is not None and not 1 <= app.port <= 65535:
        yield "app.port", f"{app.port} is not a TCP port (1-65535)"
    for key, _ in app.env:
        yield from _match(ENV_NAME, key, f"app.env.{key}", "an environment variable name")
    check = app.healthcheck
    if check is not None:
        if check.startswith("/"):
            yield from _match(URL_PATH, check, "app.healthcheck", "an HTTP path")
        elif check.startswith("["):
            try:
                argv = json.loads(check)
            except ValueError:
                argv = None
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                yield "app.healthcheck", f"{check!r} is not a JSON array of strings"
        elif check.rstrip().endswith("\\") or not check.strip():
            # A shell-form HEALTHCHECK is the rest of its Dockerfile line: a trailing backslash would
            # join the next instruction to it.
            yield "app.healthcheck", f"{check!r} is not a one-line command"


def _models(lock: Lock) -> Iterator[Problem]:
    for index, model in enumerate(lock.models):
        where = f"models[{index}]"
        if model.remote:
            # The spec names a model URL itself; `lock --check` ties it to the spec.
            problem = url_problem(model.source, roots=(), root=True)
            if problem:
                yield f"{where}.source", problem
        else:
            yield from _match(PROJECT_PATH, model.source, f"{where}.source", "a path inside the project")
        yield from _match(IMAGE_PATH, model.target, f"{where}.target", "an absolute path of plain segments")
        yield from _model_facts(model, where)


def _model_facts(model: LockedModel, where: str) -> Iterator[Problem]:
    """What a model file said of itself. Never fed to a Dockerfile, but printed in reports and
    compared by verify: each value is one plain word of the kind it claims to be."""
    facts = model.facts
    if facts is not None:
        yield from _match(MODEL_FORMAT, facts.format, f"{where}.format", "a model format name")
        for index, producer in enumerate(facts.producers):
            at = f"{where}.producers[{index}]"
            yield from _match(PY_NAME, producer.library, f"{at}.library", "a normalised PyPI project name")
            yield from _match(PRODUCER_VERSION, producer.version, f"{at}.version", "a version")
        for key, value in facts.details:
            yield from _match(DETAIL_KEY, key, f"{where}.details", "a detail name")
            if len(value) > MAX_DETAIL:
                yield f"{where}.details.{key}", f"is {len(value)} characters (at most {MAX_DETAIL})"
        if facts.note is not None and len(facts.note) > MAX_NOTE:
            yield f"{where}.note", f"is {len(facts.note)} characters (at most {MAX_NOTE})"
    for library, version in model.accept_producer:
        at = f"{where}.accept-producer"
        yield from _match(PY_NAME, library, at, "a normalised PyPI project name")
        yield from _match(PRODUCER_VERSION, version, f"{at}.{library}", "a version")
