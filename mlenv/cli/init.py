"""`mlenv init`: write a commented starter mlenv.toml, optionally from an existing requirements.txt
(pip-tools output included) or a pyproject.toml's [project] dependencies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from mlenv.errors import SpecError
from mlenv.files import write_atomic
from mlenv.spec import (
    PYPROJECT_FILE,
    SPEC_FILE,
    holds_spec,
    project_requirements,
    read_requirements_file,
)

TEMPLATE = """\
# mlenv spec: what the environment should contain. `mlenv lock` pins every layer into mlenv.lock.
name = "{name}"
# One cut-off time for every source (PyPI uploads, the Debian snapshot): re-locking later gives the same pins.
# as-of = 2025-06-01T00:00:00Z

[base]
# Pinned by digest at lock time; the Python target (version, glibc, arch) is read from this image.
image = "python:3.11-slim"
platforms = ["linux/amd64"]

[python]
{requirements_key}
# index-url = "https://pypi.org/simple"
# extra-index-urls = []
# resolver = "uv"          # or "pip-tools" (only when this machine matches the target)
# venv = "/opt/venv"

[apt]
packages = []              # e.g. ["libgomp1", "curl"]; the full closure is locked with .deb hashes

[cuda]
version = "none"           # or "12.1": CUDA from the torch/nvidia wheels or an nvidia/cuda base

[app]
copy = []                  # project files and directories copied into the image
workdir = "/app"
# cmd = ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
# port = 8000
# healthcheck = "/health"  # an HTTP path on the port, or a shell command
user = "app"

# [[app.models]]
# source = "models/model.joblib"
# target = "/app/models/model.joblib"
# strategy = "bake"        # or "download" (URL + sha256) or "mount" (a volume checked at start-up)
"""


def starter_spec(name: str, requirements_file: str | None) -> str:
    if requirements_file is None:
        key = 'requirements = []       # e.g. ["scikit-learn==1.4.2", "pandas==2.0.3"]'
    else:
        key = f'requirements-files = ["{requirements_file}"]'
    return TEMPLATE.format(name=name, requirements_key=key)


def project_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).strip("-._")
    return name or "app"


def _static_dependencies(pyproject: Path) -> bool:
    """Whether pyproject.toml lists dependencies mlenv can read (not dynamic ones, not a broken file:
    `init` without --from then writes the plain starter rather than failing on a file not asked for)."""
    if not pyproject.is_file():
        return False
    try:
        return bool(project_requirements(pyproject))
    except SpecError:
        return False


def init(
    directory: Annotated[Path, typer.Argument(help="Project directory.")] = Path("."),
    from_requirements: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Take the Python requirements from this requirements.txt (pip-tools output too) "
            "or pyproject.toml.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing mlenv.toml.")] = False,
) -> None:
    """Write a commented starter mlenv.toml."""
    target = directory / SPEC_FILE
    if target.exists() and not force:
        raise SpecError(str(target), None, "already exists", hint="use --force to overwrite it")
    pyproject = directory / PYPROJECT_FILE
    if holds_spec(pyproject):
        # A project has one spec (mlenv/spec.py refuses two); an mlenv.toml here would not be read.
        raise SpecError(
            str(pyproject),
            "tool.mlenv",
            "already holds this project's spec; an mlenv.toml beside it would be refused",
            hint="edit [tool.mlenv] in pyproject.toml instead",
        )
    relative = None
    if from_requirements is None and _static_dependencies(pyproject):
        # A project that lists its dependencies in [project] keeps them there: the spec reads them.
        from_requirements = pyproject
    if from_requirements is not None:
        try:
            relative = str(from_requirements.resolve().relative_to(directory.resolve()))
        except ValueError:
            raise SpecError(str(from_requirements), None, "must be inside the project directory") from None
        # Fail now, with the file and line (or key), not at lock time.
        if from_requirements.name == PYPROJECT_FILE:
            project_requirements(from_requirements)
        else:  # its includes must stay in the project too
            read_requirements_file(from_requirements, root=directory)
    write_atomic(target, starter_spec(project_name(directory), relative).encode())
    typer.echo(f"wrote {target}")
