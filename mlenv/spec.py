"""Read the spec: mlenv.toml, or [tool.mlenv] in pyproject.toml, into a validated `Spec`.

Every error names the file and the key path (or the requirements file and line) so a user can fix
it without reading mlenv's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.dependency_groups import resolve_dependency_groups
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import SpecError
from mlenv.files import inside
from mlenv.model.lockcheck import IMAGE_PATH, reference_problem
from mlenv.model.schema import first_error
from mlenv.model.spec import (
    DEFAULT_INDEX_URL,
    DEFAULT_VENV,
    AppSpec,
    AptSpec,
    BaseSpec,
    CudaSpec,
    ModelSpec,
    PythonSpec,
    SourceRequirement,
    Spec,
    TargetSpec,
    is_remote,
)
from mlenv.model.target import DEFAULT_PLATFORM
from mlenv.model.time import rfc3339
from mlenv.model.urls import redact

SPEC_FILE = "mlenv.toml"
PYPROJECT_FILE = "pyproject.toml"

# A quoted value in an error line is cut here: an error is one line a person reads, and a 200,000
# character requirement would bury the file and key it names.
QUOTE_LIMIT = 200

# [app] env is written into the lock and baked into the image, where anyone who pulls it can read it.
# Names and values that look like credentials are refused at lock, with a hint to pass them at run time.
SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)($|_)", re.IGNORECASE
)
SECRET_VALUE = re.compile(
    r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@"  # a URL with user:password@
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\b(AKIA|ASIA)[0-9A-Z]{16}\b"  # an AWS access key id
    r"|\b(ghp|gho|ghs|ghu|github_pat|glpat|xox[abp]|sk|hf)_[A-Za-z0-9_-]{16,}",  # common token prefixes
)


def quoted(value: str) -> str:
    """`value` as an error line quotes it: repr, cut at QUOTE_LIMIT characters."""
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + f"... ({len(value)} characters)"


def find_spec_file(location: Path) -> Path:
    """The spec file for a path: the file itself, or mlenv.toml / pyproject.toml in a directory."""
    if location.is_file():
        return location
    if not location.exists():
        raise SpecError(str(location), None, "no such file or directory")
    candidate = location / SPEC_FILE
    if candidate.is_file():
        return candidate
    pyproject = location / PYPROJECT_FILE
    if pyproject.is_file() and "mlenv" in _tool_table(_read_toml(pyproject), pyproject):
        return pyproject
    raise SpecError(
        str(location),
        None,
        f"no {SPEC_FILE} and no [tool.mlenv] in {PYPROJECT_FILE}",
        hint="run `mlenv init`",
    )


def load_spec(location: Path) -> Spec:
    """Read and validate the spec found at `location` (a file or a project directory)."""
    path = find_spec_file(location)
    _refuse_two_specs(path)
    document = _read_toml(path)
    if path.name == PYPROJECT_FILE:
        table = _tool_table(document, path).get("mlenv")
        if not isinstance(table, dict):
            raise SpecError(str(path), "tool.mlenv", "missing table")
        prefix = "tool.mlenv."
    else:
        table, prefix = document, ""
    try:
        problem = first_error(table, "mlenv.toml")
    except RecursionError:
        raise SpecError(str(path), prefix.rstrip(".") or None, "nested too deeply to validate") from None
    if problem is not None:
        key, message = problem
        # A pattern's regex says nothing to a user: the cuda keys name the forms they accept.
        forms = {
            "cuda.version": '"MAJOR.MINOR" (e.g. "12.1") or "none"',
            "cuda.cudnn": 'a cuDNN version, "MAJOR" or "MAJOR.MINOR[.PATCH...]" (e.g. "9" or "8.9.2")',
        }
        if key in forms:
            value = table["cuda"][key.split(".")[1]]
            shown = quoted(value) if isinstance(value, str) else f"{value!r} (not a string)"
            message = f"{shown} is not accepted; the accepted forms are {forms[key]}"
        raise SpecError(
            str(path),
            prefix + key if key != "(top level)" else prefix.rstrip(".") or None,
            _first_line(message),
        )
    return _build_spec(table, path, prefix, document)


def holds_spec(pyproject: Path) -> bool:
    """Whether a pyproject.toml exists and has a [tool.mlenv] table."""
    return pyproject.is_file() and "mlenv" in _tool_table(_read_toml(pyproject), pyproject)


def _refuse_two_specs(path: Path) -> None:
    """The stated rule: a project has one spec. mlenv.toml beside a pyproject.toml with [tool.mlenv]
    is refused, naming both, rather than one silently overriding the other."""
    if path.name == SPEC_FILE:
        other = path.with_name(PYPROJECT_FILE)
        try:
            has_tool = holds_spec(other)
        except SpecError:  # a pyproject.toml mlenv cannot read holds no spec of it; mlenv.toml is the spec
            has_tool = False
    elif path.name == PYPROJECT_FILE:
        other = path.with_name(SPEC_FILE)
        has_tool = other.is_file()
    else:
        return
    if has_tool:
        spec_file, pyproject = (path, other) if path.name == SPEC_FILE else (other, path)
        raise SpecError(
            str(path),
            None,
            f"two specs: {spec_file} and [tool.mlenv] in {pyproject}; mlenv reads one",
            hint="keep one of them (move the settings, then delete the other)",
        )


def spec_hash(spec: Spec) -> str:
    """sha256 of the normalised spec: what the lock was made from, independent of file layout.

    Requirements files are hashed by their requirements (already merged into the spec), so moving
    a requirement between the inline list and a file, or reformatting, does not make a lock stale.
    """
    data = asdict(spec)
    for volatile in ("path", "project_dir"):
        data.pop(volatile)
    # Where requirements came from and how they were chosen (files, extras, groups) is already in
    # the requirements; constraints and hashes are content, hashed only when present so that a spec
    # without them hashes as it did before they were read.
    for layout in ("requirements_files", "extras", "groups", "origins"):
        data["python"].pop(layout)
    for content in ("constraints", "hashes", "as_of_exceptions", "sources"):
        if not data["python"][content]:
            del data["python"][content]
    data["python"]["requirements"] = sorted(data["python"]["requirements"])
    data["apt"]["packages"] = sorted(data["apt"]["packages"])
    for model in data["app"]["models"]:
        if not model["accept_producer"]:
            del model["accept_producer"]  # a model without the key hashes as it did before the key existed
    if not data["app"]["allow"]:
        del data["app"]["allow"]  # a spec without the key hashes as it did before the key existed
    else:
        data["app"]["allow"] = sorted(data["app"]["allow"])
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"cannot hash {type(value).__name__}")


def _tool_table(document: dict[str, Any], path: Path) -> dict[str, Any]:
    """pyproject's [tool] table; another project's `tool = 5` is a mistake to name, not a crash."""
    tool = document.get("tool", {})
    if not isinstance(tool, dict):
        raise SpecError(str(path), "tool", f"is a {type(tool).__name__}, not a table")
    return tool


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(str(path), None, f"not valid TOML: {_first_line(str(error))}") from None
    except UnicodeDecodeError as error:
        raise SpecError(str(path), None, not_utf8(error)) from None
    except RecursionError:
        raise SpecError(str(path), None, "not valid TOML: nested too deeply") from None
    except OSError as error:
        raise SpecError(str(path), None, f"cannot read: {error.strerror or error}") from None


def not_utf8(error: UnicodeDecodeError) -> str:
    """What a UnicodeDecodeError means to a user: the file is not text in UTF-8, and where it stops being."""
    return f"not UTF-8: byte {error.object[error.start]:#04x} at offset {error.start}"


def _first_line(text: str) -> str:
    """The first line of a library's message, cut to QUOTE_LIMIT: the lines after it draw carets."""
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= QUOTE_LIMIT else line[:QUOTE_LIMIT] + "..."


def _parse_as_of(value: Any, path: Path, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise SpecError(str(path), key, f"not an RFC 3339 date-time: {quoted(str(value))}") from None
    if parsed.tzinfo is None:
        raise SpecError(str(path), key, "needs a timezone (e.g. 2025-06-01T00:00:00Z)")
    return parsed.astimezone(UTC).replace(microsecond=0)


def _normalise_requirement(text: str, path: str, key: str | None) -> str:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        if text.startswith((".", "/", "~")) or text.endswith((".whl", ".tar.gz", ".zip")):
            raise SpecError(
                path, key, f"a local path requirement {quoted(text)} {NOT_YET}", hint=NOT_YET_HINT
            ) from None
        raise SpecError(path, key, f"invalid requirement {quoted(text)}: {_first_line(str(error))}") from None
    if requirement.url is not None:
        kind = "a VCS requirement" if "+" in requirement.url.split(":", 1)[0] else "a direct URL requirement"
        raise SpecError(path, key, f"{kind} ({requirement.name} @ ...) {NOT_YET}", hint=NOT_YET_HINT)
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


@dataclass(frozen=True, kw_only=True)
class RequirementLine:
    """One requirement of a requirements file, as pip reads it (continuations joined)."""

    text: str
    file: str
    line: int
    hashes: tuple[str, ...] = ()  # sha256 hex digests of `--hash=sha256:...`
    constraint: bool = False  # read through `-c`: bounds a version, asks for nothing
    index_option: str | None = None  # `--index-url` / `--extra-index-url` (text is the URL)


# `--hash=sha256:HEX` (or `--hash sha256:HEX`) after a requirement, as pip-compile --generate-hashes writes.
HASH_OPTION = re.compile(r"\s--hash[=\s]+(?P<algorithm>[A-Za-z0-9]+):(?P<digest>[0-9A-Za-z]+)")
# pip treats `#` as a comment at a line's start or after whitespace; `#egg=` inside a URL is not one.
COMMENT = re.compile(r"(^|\s)#.*$")
INCLUDE_OPTIONS = {"-r": False, "--requirement": False, "-c": True, "--constraint": True}
# pip-compile writes the indexes it used into its output; they are read and must be the spec's.
INDEX_OPTIONS = {"-i": "--index-url", "--index-url": "--index-url", "--extra-index-url": "--extra-index-url"}
OTHER_SOURCES = ("-f", "--find-links", "--trusted-host", "--no-index")
NOT_YET = "is not supported yet: mlenv pins each file by the sha256 an index serves"
NOT_YET_HINT = (
    "publish it to an index, or list its directory (./libs/pkg) or its git URL (name @ git+https://...@REF) "
    "in [python] requirements or requirements.txt: mlenv builds those into wheels at lock"
)
# Directories never read into a local package's tree hash nor copied into its host build: VCS data,
# caches and build outputs, which change without the package changing.
TREE_SKIPPED = frozenset(
    {".git", ".hg", "__pycache__", "build", "dist", ".tox", ".nox", ".venv", ".mypy_cache", ".pytest_cache"}
)


def _source_requirement(
    text: str, base: Path, project_dir: Path, where: str, key: str | None
) -> SourceRequirement | None:
    """A local directory (`./libs/pkg`, `file:...`, `name @ file:///...`) or git (`name @ git+URL@REF`,
    `git+URL@REF#egg=name`) requirement, which lock builds on the host; None for an index requirement.

    A relative directory is read against the file that names it (the spec's directory for inline
    requirements) and must stay inside the project: its tree is hashed here, so a changed tree makes
    the lock stale."""
    stripped = text.strip()
    name: str | None = None
    location = stripped
    if "@" in stripped and not stripped.startswith(("git+", "file:", ".", "/")):
        try:
            parsed = Requirement(stripped)
        except InvalidRequirement:
            return None
        if parsed.url is None:
            return None
        if parsed.marker is not None or parsed.extras:
            raise SpecError(
                where, key, f"{quoted(stripped)}: markers and extras are not read on a built requirement"
            )
        name, location = canonicalize_name(parsed.name), parsed.url
    if location.startswith("git+"):
        return _vcs_requirement(location, name, where, key)
    if location.startswith("file:"):
        location = urlsplit(location).path
    elif not location.startswith((".", "/")):
        return None
    if location.endswith((".whl", ".tar.gz", ".zip")):
        raise SpecError(
            where,
            key,
            f"a local path requirement {quoted(location)} {NOT_YET}",
            hint="list the directory it was built from",
        )
    if ";" in location or "[" in location:
        raise SpecError(
            where, key, f"{quoted(location)}: markers and extras are not read on a local directory"
        )
    relative = os.path.relpath(os.path.normpath(base / location), project_dir)
    directory = _project_path(project_dir, relative, where, key or "requirement")
    if not directory.is_dir() or not (
        (directory / "pyproject.toml").is_file() or (directory / "setup.py").is_file()
    ):
        raise SpecError(
            where, key, f"{quoted(location)} is not a directory with a pyproject.toml or setup.py"
        )
    return SourceRequirement(
        kind="directory", location=Path(relative).as_posix(), tree_sha256=tree_sha256(directory)
    )


def _vcs_requirement(url: str, name: str | None, where: str, key: str | None) -> SourceRequirement:
    """`git+SCHEME://host/repo[@REF][#egg=name]`: URL and ref apart (lock pins the ref to a commit)."""
    parts = urlsplit(url.removeprefix("git+"))
    credentials = parts.password or (parts.username and parts.scheme != "ssh")  # ssh's `git@` is a login
    if parts.scheme not in ("https", "http", "ssh", "file") or credentials:
        raise SpecError(
            where,
            key,
            f"{quoted(redact(url))}: git over https, ssh or file without credentials in the URL is read",
            hint="give credentials to git (a credential helper or ~/.netrc), not in the requirement",
        )
    fragment = dict(part.partition("=")[::2] for part in parts.fragment.split("&") if part)
    if set(fragment) - {"egg"}:
        raise SpecError(where, key, f"{quoted(url)}: only #egg= is read after a git URL")
    path, revision = parts.path, None
    if "@" in path:
        path, revision = path.rsplit("@", 1)
    egg = fragment.get("egg")
    return SourceRequirement(
        kind="vcs",
        location=parts._replace(path=path, fragment="").geturl(),
        name=name or (canonicalize_name(egg) if egg else None),
        revision=revision or None,
    )


def tree_files(root: Path) -> list[Path]:
    """The files of a local package as lock hashes and builds them, sorted: every file and symlink below
    `root` except under TREE_SKIPPED directories and *.egg-info, and no compiled .pyc."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in TREE_SKIPPED and not d.endswith(".egg-info")
        )
        found += [Path(directory, f) for f in files if not f.endswith(".pyc")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def tree_sha256(root: Path) -> str:
    """sha256 over each file's path (relative, `/`), kind and content: what `lock --check` compares."""
    digest = hashlib.sha256()
    for path in tree_files(root):
        if path.is_symlink():
            kind, content = b"link", os.readlink(path).encode()
        else:
            kind, content = (b"exec" if os.access(path, os.X_OK) else b"file"), path.read_bytes()
        relative = path.relative_to(root).as_posix().encode()
        digest.update(b"%s\0%s\0%s\n" % (kind, relative, hashlib.sha256(content).hexdigest().encode()))
    return digest.hexdigest()


def _logical_lines(lines: list[str], path: Path) -> list[tuple[int, str]]:
    """(first line number, text) with `\\` continuations joined and comments removed, as pip reads them."""
    joined: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for number, raw in enumerate(lines, start=1):
        if not pending:
            first = number
        text = COMMENT.sub("", raw).rstrip()
        if text.endswith("\\"):
            pending.append(text[:-1])
            continue
        pending.append(text)
        line = " ".join(part.strip() for part in pending).strip()
        pending = []
        if line:
            joined.append((first, line))
    if pending:
        # pip would join the next line; there is none, so the requirement may be cut short.
        raise SpecError(f"{path}:{first}", None, "ends with a \\ continuation and no line after it")
    return joined


def read_requirements_file(
    path: Path, seen: frozenset[Path] = frozenset(), *, root: Path | None = None, constraint: bool = False
) -> list[RequirementLine]:
    """Requirements of a requirements file as pip-tools and pip write them: `-r` includes, `-c`
    constraints, `--hash` options, markers and extras.

    With `root`, an include must stay inside that directory (the project), symlinks followed.
    """
    if path in seen:
        raise SpecError(str(path), None, "includes itself through -r or -c")
    if path.exists() and not path.is_file():  # a FIFO would block the read, a device never end it
        raise SpecError(str(path), None, "not a regular file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise SpecError(str(path), None, not_utf8(error)) from None
    except OSError as error:
        raise SpecError(
            str(path), None, f"cannot read requirements file: {error.strerror or error}"
        ) from None
    found: list[RequirementLine] = []
    for number, line in _logical_lines(lines, path):
        where = f"{path}:{number}"
        option, _, rest = line.partition(" ")
        if "=" in option and option.startswith("--"):
            option, _, rest = line.partition("=")
        if option in INCLUDE_OPTIONS:
            named = rest.strip()
            if root is not None:
                within = inside(root, os.path.relpath(path.parent / named, root))
                if within is None or os.path.isabs(named):
                    raise SpecError(where, None, f"{option} {quoted(named)} is outside the project")
            if not (path.parent / named).exists():
                raise SpecError(where, None, f"{option} {quoted(named)}: no such file")
            found.extend(
                read_requirements_file(
                    path.parent / named,
                    seen | {path},
                    root=root,
                    constraint=constraint or INCLUDE_OPTIONS[option],
                )
            )
        elif option in ("-e", "--editable"):
            raise SpecError(
                where,
                None,
                f"an editable requirement ({option} {rest.strip()}): an image holds an installed copy, "
                "not a link to a source tree",
                hint=f"write {quoted(rest.strip())} without {option}: mlenv builds it into a wheel at lock",
            )
        elif option in INDEX_OPTIONS:
            found.append(
                RequirementLine(
                    text=rest.strip(), file=str(path), line=number, index_option=INDEX_OPTIONS[option]
                )
            )
        elif option in OTHER_SOURCES:
            raise SpecError(
                where,
                None,
                f"option {quoted(option)} is not supported: mlenv locks files from indexes only",
                hint="name the indexes in [python] index-url and extra-index-urls of the spec",
            )
        elif line.startswith("-"):
            raise SpecError(
                where,
                None,
                f"option {quoted(line.split()[0])} is not supported in requirements files",
                hint="requirements (with --hash on their own line, or after a \\), -r and -c are read",
            )
        else:
            found.append(_requirement_line(line, where, str(path), number, constraint))
    return found


def _requirement_line(line: str, where: str, file: str, number: int, constraint: bool) -> RequirementLine:
    hashes = []
    for match in HASH_OPTION.finditer(" " + line):
        if match["algorithm"].lower() != "sha256":
            raise SpecError(where, None, f"--hash={match['algorithm']}: only sha256 hashes are checked")
        hashes.append(match["digest"].lower())
    text = HASH_OPTION.sub("", " " + line).strip()
    if re.search(r"\s--?[a-z]", " " + text):
        option = re.search(r"--?[a-z][^\s=]*", text)
        raise SpecError(
            where, None, f"option {quoted(option[0] if option else text)} after a requirement is not read"
        )
    return RequirementLine(text=text, file=file, line=number, hashes=tuple(hashes), constraint=constraint)


def _check_index_line(line: RequirementLine, python_table: dict[str, Any], where: str) -> None:
    """An index a requirements file names (pip-compile writes them) must be one the spec names: the
    spec is where the lock's indexes come from, and a file cannot quietly add one."""
    url = line.text.rstrip("/")
    if line.index_option == "--index-url":
        key, names = "index-url", [python_table.get("index-url", DEFAULT_INDEX_URL)]
    else:
        key, names = "extra-index-urls", list(python_table.get("extra-index-urls", []))
    if url not in {name.rstrip("/") for name in names}:
        raise SpecError(
            where,
            None,
            f"{line.index_option} {quoted(redact(line.text))} is not the spec's [python] {key}",
            hint=f"add it to [python] {key} of the spec, or remove the line",
        )


def _build_spec(table: dict[str, Any], path: Path, prefix: str, document: dict[str, Any]) -> Spec:
    project_dir = path.parent
    file = str(path)

    base_table = table.get("base")
    base = None
    if base_table is not None:
        problem = reference_problem(base_table["image"])
        if problem is not None:
            raise SpecError(file, prefix + "base.image", problem)
        base = BaseSpec(
            image=base_table["image"],
            platforms=tuple(base_table.get("platforms", [DEFAULT_PLATFORM])),
        )

    target_table = table.get("target", {})
    target = TargetSpec(
        python=target_table.get("python"),
        glibc=target_table.get("glibc"),
        platforms=tuple(target_table.get("platforms", [DEFAULT_PLATFORM])),
    )
    if base is None and (target.python is None or target.glibc is None):
        raise SpecError(
            file,
            prefix + "base",
            "missing: name a base image, or give [target] python and glibc to resolve for",
        )

    python_table = table.get("python", {})
    gathered = _Gathered()
    for index, text in enumerate(python_table.get("requirements", [])):
        key = f"{prefix}python.requirements[{index}]"
        built = _source_requirement(text, project_dir, project_dir, file, key)
        if built is not None:
            gathered.sources.add(built)
            continue
        gathered.add(_normalise_requirement(text, file, key), file, key)
    extras = tuple(python_table.get("extras", []))
    groups = tuple(python_table.get("groups", []))
    project: dict[str, Any] | None = None
    if path.name == PYPROJECT_FILE:
        project = _project_requirements(document, path, extras, groups, prefix, gathered)
    requirement_files = tuple(python_table.get("requirements-files", []))
    for index, relative in enumerate(requirement_files):
        key = f"{prefix}python.requirements-files[{index}]"
        req_path = _project_path(project_dir, relative, file, key)
        if not req_path.is_file():
            raise SpecError(file, key, f"no such file: {quoted(relative)}")
        if Path(relative).name == PYPROJECT_FILE:
            project = _project_requirements(
                _read_toml(project_dir / relative), project_dir / relative, extras, groups, prefix, gathered
            )
            continue
        for line in read_requirements_file(project_dir / relative, root=project_dir):
            where = f"{line.file}:{line.line}"
            if line.index_option is not None:
                _check_index_line(line, python_table, where)
                continue
            built = _source_requirement(line.text, Path(line.file).parent, project_dir, where, None)
            if built is not None:
                gathered.sources.add(built)
                continue
            gathered.add(
                _normalise_requirement(line.text, where, None),
                where,
                None,
                hashes=line.hashes,
                constraint=line.constraint,
            )
    if (extras or groups) and project is None:
        raise SpecError(
            file,
            f"{prefix}python.{'extras' if extras else 'groups'}",
            f"chooses from a {PYPROJECT_FILE}, but none is read",
            hint=f'list it: requirements-files = ["{PYPROJECT_FILE}"]',
        )
    python = PythonSpec(
        requirements=tuple(sorted(gathered.found.values())),
        requirements_files=requirement_files,
        extras=extras,
        groups=groups,
        constraints=tuple(sorted(gathered.constraints)),
        hashes=tuple(sorted(gathered.hashes.items())),
        origins=tuple(sorted(set(gathered.origins))),
        index_url=python_table.get("index-url", DEFAULT_INDEX_URL),
        extra_index_urls=tuple(python_table.get("extra-index-urls", [])),
        resolver=python_table.get("resolver", "uv"),
        venv=python_table.get("venv", DEFAULT_VENV),
        as_of_exceptions=_as_of_exceptions(table, path, prefix),
        sources=tuple(sorted(gathered.sources, key=lambda r: (r.kind, r.location, r.revision or ""))),
    )

    apt_table = table.get("apt", {})
    apt = AptSpec(packages=tuple(sorted(apt_table.get("packages", []))), mirror=apt_table.get("mirror"))

    cuda_table = table.get("cuda", {})
    cuda = CudaSpec(version=cuda_table.get("version"), cudnn=cuda_table.get("cudnn"))

    app_table = table.get("app", {})
    models = []
    for index, model in enumerate(app_table.get("models", [])):
        strategy = model.get("strategy", "bake")
        source = model["source"]
        key = f"{prefix}app.models[{index}]"
        is_url = is_remote(source)
        if strategy == "download" and not is_url:
            raise SpecError(file, f"{key}.source", "strategy 'download' needs an http(s) URL")
        if is_url and "sha256" not in model:
            raise SpecError(file, f"{key}.sha256", "missing: a model fetched from a URL needs its sha256")
        if strategy == "bake" and is_url:
            raise SpecError(file, f"{key}.source", "strategy 'bake' copies a file of the project, not a URL")
        if not is_url:
            _project_path(project_dir, source, file, f"{key}.source")
        _check_image_path(model["target"], file, f"{key}.target")
        models.append(
            ModelSpec(
                source=source,
                target=model["target"],
                strategy=strategy,
                sha256=model.get("sha256"),
                accept_producer=_accept_producer(model.get("accept-producer", {}), file, key),
            )
        )
    app = AppSpec(
        copy=tuple(app_table.get("copy", [])),
        workdir=app_table.get("workdir", "/app"),
        cmd=tuple(app_table.get("cmd", [])),
        port=app_table.get("port"),
        healthcheck=app_table.get("healthcheck"),
        user=app_table.get("user", "app"),
        env=tuple(sorted(app_table.get("env", {}).items())),
        models=tuple(models),
        allow=tuple(str(path).strip("/") for path in app_table.get("allow", [])),
    )
    for index, relative in enumerate(app.copy):
        if not _project_path(project_dir, relative, file, f"{prefix}app.copy[{index}]").exists():
            raise SpecError(
                file, f"{prefix}app.copy[{index}]", f"no such file or directory: {quoted(relative)}"
            )
    for name, value in app.env:
        _refuse_secret(name, value, file, f"{prefix}app.env.{name}")
    _check_image_path(app.workdir, file, f"{prefix}app.workdir")
    _check_image_path(python.venv, file, f"{prefix}python.venv")

    return Spec(
        path=file,
        project_dir=str(project_dir),
        name=_spec_name(table, project, file, prefix),
        base=base,
        target=target,
        python=python,
        apt=apt,
        cuda=cuda,
        app=app,
        as_of=_parse_as_of(table.get("as-of"), path, prefix + "as-of"),
    )


def _as_of_exceptions(
    table: dict[str, Any], path: Path, prefix: str
) -> tuple[tuple[str, datetime | None], ...]:
    """[python] as-of-exceptions: a table of package = its own cut-off, or a list of packages with none.
    Without a top-level as-of there is no cut-off to be let past, so the key is refused."""
    value = table.get("python", {}).get("as-of-exceptions")
    if value is None:
        return ()
    key = f"{prefix}python.as-of-exceptions"
    if table.get("as-of") is None:
        raise SpecError(
            str(path), key, "needs as-of: without a cut-off there is nothing to let a package past"
        )
    entries = {name: None for name in value} if isinstance(value, list) else dict(value)
    found: dict[str, datetime | None] = {}
    for name, cutoff in entries.items():
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
            raise SpecError(str(path), key, f"{quoted(name)} is not a package name")
        found[canonicalize_name(name)] = _parse_as_of(cutoff, path, f"{key}.{name}")
    return tuple(sorted(found.items()))


def _accept_producer(table: dict[str, str], file: str, key: str) -> tuple[tuple[str, str], ...]:
    """accept-producer = { LIBRARY = "VERSION" }: names as PyPI normalises them, each named once."""
    accepted: dict[str, str] = {}
    for name, version in table.items():
        library = canonicalize_name(name)
        if library in accepted:
            raise SpecError(file, f"{key}.accept-producer", f"names {library} twice ({quoted(name)})")
        accepted[library] = version
    return tuple(sorted(accepted.items()))


def _check_image_path(value: str, file: str, key: str) -> None:
    """A path inside the image that a Dockerfile line will name: absolute plain segments, no `..`."""
    if not IMAGE_PATH.fullmatch(value):
        raise SpecError(
            file, key, f"not an absolute path of plain segments inside the image: {quoted(value)}"
        )


def _project_path(project_dir: Path, relative: str, file: str, key: str) -> Path:
    """`relative` inside the project directory, or an error naming `key`: an absolute path, `..` out of
    the project or a symlink pointing out would make mlenv read (and hash, and bake) a file of the host."""
    resolved = inside(project_dir, relative)
    if resolved is None:
        raise SpecError(
            file, key, f"{quoted(relative)} is outside the project directory", hint="use a path inside it"
        )
    return resolved


def _refuse_secret(name: str, value: str, file: str, key: str) -> None:
    """Refuse a credential in [app] env: it would be written into the lock and readable in the image."""
    if SECRET_NAME.search(name) is None and SECRET_VALUE.search(value) is None:
        return
    raise SpecError(
        file,
        key,
        "looks like a secret; [app] env is written into the lock and the image for anyone to read",
        hint=f"leave it out and pass it at run time: docker run -e {name} ...",
    )


@dataclass(kw_only=True)
class _Gathered:
    """Requirements from every source of a spec, each package asked for once."""

    found: dict[str, str] = field(default_factory=dict)
    constraints: set[str] = field(default_factory=set)
    hashes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    origins: list[tuple[str, str]] = field(default_factory=list)
    sources: set[SourceRequirement] = field(default_factory=set)  # built on the host at lock

    def add(
        self,
        requirement: str,
        where: str,
        key: str | None,
        *,
        hashes: tuple[str, ...] = (),
        constraint: bool = False,
    ) -> None:
        name = canonicalize_name(Requirement(requirement).name)
        self.origins.append((name, where.rsplit(":", 1)[0] if where[-1:].isdigit() else where))
        if hashes:
            known = self.hashes.get(name)
            if known is not None and set(known) != set(hashes):
                raise SpecError(where, key, f"{name} is pinned with other --hash values elsewhere")
            self.hashes[name] = tuple(sorted(set(hashes)))
        if constraint:
            self.constraints.add(requirement)
            return
        if name in self.found and self.found[name] != requirement:
            raise SpecError(where, key, f"{name} is required twice: {self.found[name]!r} and {requirement!r}")
        self.found[name] = requirement


def project_requirements(path: Path) -> tuple[str, ...]:
    """The [project].dependencies of a pyproject.toml, normalised (what `init --from` checks)."""
    gathered = _Gathered()
    _project_requirements(_read_toml(path), path, (), (), "", gathered)
    return tuple(sorted(gathered.found.values()))


def _project_requirements(
    document: dict[str, Any],
    path: Path,
    extras: tuple[str, ...],
    groups: tuple[str, ...],
    prefix: str,
    gathered: _Gathered,
) -> dict[str, Any]:
    """Add [project].dependencies, the chosen extras and dependency groups of a pyproject.toml.

    The project itself is not installed (its code goes into the image through [app] copy); a
    dependency on itself with extras, `app[gpu]` inside an extra, selects those extras.
    """
    file = str(path)
    project = document.get("project", {})
    if not isinstance(project, dict):
        raise SpecError(file, "project", f"is a {type(project).__name__}, not a table")
    if "dependencies" in project.get("dynamic", []):
        raise SpecError(
            file,
            "project.dynamic",
            "dependencies are dynamic (computed by a build backend); mlenv reads only static ones",
            hint="list them in [project].dependencies or in a requirements file",
        )
    own = canonicalize_name(str(project.get("name", "")))
    optional = {canonicalize_name(k): (k, v) for k, v in project.get("optional-dependencies", {}).items()}
    chosen: set[str] = set()

    def add(texts: Any, key: str) -> None:
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise SpecError(file, key, "is not a list of requirement strings")
        for index, text in enumerate(texts):
            # A git dependency is built at lock; a directory has no relative PEP 508 form to read here.
            built = _source_requirement(text, path.parent, path.parent, file, f"{key}[{index}]")
            if built is not None and built.kind == "vcs":
                gathered.sources.add(built)
                continue
            requirement = _normalise_requirement(text, file, f"{key}[{index}]")
            parsed = Requirement(requirement)
            if parsed.name == own and own:
                for name in sorted(parsed.extras):
                    choose(name, f"{key}[{index}]")
                continue
            gathered.add(requirement, file, f"{key}[{index}]")

    def choose(extra: str, key: str) -> None:
        name = canonicalize_name(extra)
        if name in chosen:
            return
        if name not in optional:
            have = ", ".join(sorted(optional)) or "none"
            raise SpecError(
                file, key, f"no extra {quoted(extra)} in [project.optional-dependencies] (it has: {have})"
            )
        chosen.add(name)
        spelled, texts = optional[name]
        add(texts, f"project.optional-dependencies.{spelled}")

    add(project.get("dependencies", []), "project.dependencies")
    for index, extra in enumerate(extras):
        choose(extra, f"{prefix}python.extras[{index}]")
    table = document.get("dependency-groups", {})
    if groups and not isinstance(table, dict):
        raise SpecError(file, "dependency-groups", f"is a {type(table).__name__}, not a table")
    known = {canonicalize_name(name) for name in table}
    for index, group in enumerate(groups):
        key = f"{prefix}python.groups[{index}]"
        if canonicalize_name(group) not in known:
            have = ", ".join(sorted(known)) or "none"
            raise SpecError(file, key, f"no group {quoted(group)} in [dependency-groups] (it has: {have})")
        try:
            texts = list(resolve_dependency_groups(table, group))
        except Exception as error:  # an ExceptionGroup (cycle, malformed include) or a ValueError
            inner = error.exceptions[0] if isinstance(error, ExceptionGroup) else error
            raise SpecError(file, f"dependency-groups.{group}", _first_line(str(inner))) from None
        add(texts, f"dependency-groups.{group}")
    return project


def _spec_name(table: dict[str, Any], project: dict[str, Any] | None, file: str, prefix: str) -> str:
    """`name`, or the pyproject's [project].name as PyPI normalises it."""
    if "name" in table:
        return str(table["name"])
    if project is not None and isinstance(project.get("name"), str):
        name = canonicalize_name(project["name"])
        if re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            return name
        raise SpecError(file, "project.name", f"{quoted(project['name'])} is not usable as an image name")
    raise SpecError(file, prefix + "name", "missing (or a [project].name in a pyproject.toml that is read)")
