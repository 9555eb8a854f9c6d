"""Read the spec: mlenv.toml, or [tool.mlenv] in pyproject.toml, into a validated `Spec`.

Every error names the file and the key path (or the requirements file and line) so a user can fix
it without reading mlenv's code.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import SpecError
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
    if pyproject.is_file() and "mlenv" in _read_toml(pyproject).get("tool", {}):
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
        table = document.get("tool", {}).get("mlenv")
        if not isinstance(table, dict):
            raise SpecError(str(path), "tool.mlenv", "missing table")
        prefix = "tool.mlenv."
    else:
        table, prefix = document, ""
    problem = first_error(table, "mlenv.toml")
    if problem is not None:
        key, message = problem
        raise SpecError(
            str(path), prefix + key if key != "(top level)" else prefix.rstrip(".") or None, message
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(str(path), None, f"not valid TOML: {error}") from None
    except OSError as error:
        raise SpecError(str(path), None, f"cannot read: {error.strerror}") from None


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
            raise SpecError(str(path), key, f"not an RFC 3339 date-time: {value!r}") from None
    if parsed.tzinfo is None:
        raise SpecError(str(path), key, "needs a timezone (e.g. 2025-06-01T00:00:00Z)")
    return parsed.astimezone(UTC).replace(microsecond=0)


def _normalise_requirement(text: str, path: str, key: str | None) -> str:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise SpecError(path, key, f"invalid requirement {text!r}: {error}") from None
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


def read_requirements_file(path: Path, seen: frozenset[Path] = frozenset()) -> list[tuple[str, str, int]]:
    """Requirement lines of a requirements file, following `-r` includes: (text, file, line number)."""
    if path in seen:
        raise SpecError(str(path), None, "includes itself through -r")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SpecError(str(path), None, f"cannot read requirements file: {error.strerror}") from None
    found: list[tuple[str, str, int]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            included = path.parent / line.split(None, 1)[1].strip()
            found.extend(read_requirements_file(included, seen | {path}))
        elif line.startswith("-"):
            raise SpecError(
                f"{path}:{number}",
                None,
                f"option {line.split()[0]!r} is not supported in requirements files",
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
        req_path = project_dir / relative
        if not req_path.is_file():
            raise SpecError(file, f"{prefix}python.requirements-files[{index}]", f"no such file: {relative}")
        for text, source, line in read_requirements_file(req_path):
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
        models.append(
            ModelSpec(source=source, target=model["target"], strategy=strategy, sha256=model.get("sha256"))
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
        if not (project_dir / relative).exists():
            raise SpecError(file, f"{prefix}app.copy[{index}]", f"no such file or directory: {relative}")

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


def _add_requirement(found: dict[str, str], requirement: str, where: str, key: str | None) -> None:
    name = canonicalize_name(Requirement(requirement).name)
    if name in found and found[name] != requirement:
        raise SpecError(where, key, f"{name} is required twice: {found[name]!r} and {requirement!r}")
    found[name] = requirement
