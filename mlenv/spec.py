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
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

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
    Spec,
    TargetSpec,
    is_remote,
)
from mlenv.model.target import DEFAULT_PLATFORM
from mlenv.model.time import rfc3339

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
        raise SpecError(
            str(path),
            prefix + key if key != "(top level)" else prefix.rstrip(".") or None,
            _first_line(message),
        )
    return _build_spec(table, path, prefix)


def spec_hash(spec: Spec) -> str:
    """sha256 of the normalised spec: what the lock was made from, independent of file layout.

    Requirements files are hashed by their requirements (already merged into the spec), so moving
    a requirement between the inline list and a file, or reformatting, does not make a lock stale.
    """
    data = asdict(spec)
    for volatile in ("path", "project_dir"):
        data.pop(volatile)
    data["python"].pop("requirements_files")
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
        raise SpecError(path, key, f"invalid requirement {quoted(text)}: {_first_line(str(error))}") from None
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


def read_requirements_file(
    path: Path, seen: frozenset[Path] = frozenset(), *, root: Path | None = None
) -> list[tuple[str, str, int]]:
    """Requirement lines of a requirements file, following `-r` includes: (text, file, line number).

    With `root`, an include must stay inside that directory (the project), symlinks followed.
    """
    if path in seen:
        raise SpecError(str(path), None, "includes itself through -r")
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
    found: list[tuple[str, str, int]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            named = line.split(None, 1)[1].strip()
            included = path.parent / named
            if root is not None:
                within = inside(root, os.path.relpath(path.parent / named, root))
                if within is None or os.path.isabs(named):
                    raise SpecError(f"{path}:{number}", None, f"-r {quoted(named)} is outside the project")
            found.extend(read_requirements_file(included, seen | {path}, root=root))
        elif line.startswith("-"):
            raise SpecError(
                f"{path}:{number}",
                None,
                f"option {quoted(line.split()[0])} is not supported in requirements files",
                hint="put index URLs in [python] of the spec; hashes come from the lock",
            )
        else:
            found.append((line, str(path), number))
    return found


def _build_spec(table: dict[str, Any], path: Path, prefix: str) -> Spec:
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
    requirements: dict[str, str] = {}
    for index, text in enumerate(python_table.get("requirements", [])):
        key = f"{prefix}python.requirements[{index}]"
        _add_requirement(requirements, _normalise_requirement(text, file, key), file, key)
    requirement_files = tuple(python_table.get("requirements-files", []))
    for index, relative in enumerate(requirement_files):
        key = f"{prefix}python.requirements-files[{index}]"
        req_path = _project_path(project_dir, relative, file, key)
        if not req_path.is_file():
            raise SpecError(file, key, f"no such file: {quoted(relative)}")
        for text, source, line in read_requirements_file(project_dir / relative, root=project_dir):
            where = f"{source}:{line}"
            _add_requirement(requirements, _normalise_requirement(text, where, None), where, None)
    python = PythonSpec(
        requirements=tuple(sorted(requirements.values())),
        requirements_files=requirement_files,
        index_url=python_table.get("index-url", DEFAULT_INDEX_URL),
        extra_index_urls=tuple(python_table.get("extra-index-urls", [])),
        resolver=python_table.get("resolver", "uv"),
        venv=python_table.get("venv", DEFAULT_VENV),
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
        name=table["name"],
        base=base,
        target=target,
        python=python,
        apt=apt,
        cuda=cuda,
        app=app,
        as_of=_parse_as_of(table.get("as-of"), path, prefix + "as-of"),
    )


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


def _add_requirement(found: dict[str, str], requirement: str, where: str, key: str | None) -> None:
    name = canonicalize_name(Requirement(requirement).name)
    if name in found and found[name] != requirement:
        raise SpecError(where, key, f"{name} is required twice: {found[name]!r} and {requirement!r}")
    found[name] = requirement
