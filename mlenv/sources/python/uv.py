"""The uv resolver backend: `uv pip compile --format pylock.toml` for a target python and platform.

uv resolves for an interpreter and platform other than the host's, honours `--exclude-newer`, and its
PEP 751 output already lists each pin's files for that platform with url, size and the index's sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from mlenv.errors import ResolutionError, SourceError
from mlenv.files import work_directory
from mlenv.model.lock import PythonFile, PythonPin
from mlenv.model.spec import ResolverName
from mlenv.model.target import glibc_minor, machine
from mlenv.model.time import rfc3339
from mlenv.model.urls import redact
from mlenv.sources.python.backend import PythonRequest, requirements_input

UV_MANYLINUX_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)


def find_uv() -> str:
    """The uv executable: the one installed with mlenv's Python first, then PATH."""
    beside = Path(sys.executable).with_name("uv")
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise SourceError(
            "uv is not installed", hint="pip install uv, or set [python] resolver = 'pip-tools'"
        )
    return found


def python_platform(glibc: str, platform: str) -> str:
    """uv's `--python-platform` for a target: the highest manylinux level not above its glibc.

    Clamping down is safe: a newer glibc runs every wheel built for an older one.
    """
    minor = max((m for m in UV_MANYLINUX_MINORS if m <= glibc_minor(glibc)), default=None)
    if minor is None:
        raise ResolutionError(f"glibc {glibc} is older than manylinux_2_17; no wheels target it")
    return f"{machine(platform)}-manylinux_2_{minor}"


class UvBackend:
    name: ResolverName = "uv"

    def resolve(self, request: PythonRequest) -> list[PythonPin]:
        with work_directory("uv") as work:
            requirements = Path(work, "requirements.in")
            requirements.write_text(requirements_input(request, Path(work)), encoding="utf-8")
            output = Path(work, "pylock.toml")
            if request.preferences:
                # uv keeps the pins of an existing output file that still satisfy the requirements.
                output.write_text(preference_pylock(request.preferences), encoding="utf-8")
            command = [
                find_uv(),
                "pip",
                "compile",
                str(requirements),
                "--format",
                "pylock.toml",
                "--output-file",
                str(output),
                "--python-version",
                request.python_version,
                "--python-platform",
                python_platform(request.glibc, request.platform),
                "--index-url",
                request.index_url,
                "--no-header",
                "--no-config",
                "--quiet",
            ]
            for extra in request.extra_index_urls:
                command += ["--extra-index-url", extra]
            if request.as_of is not None:
                command += ["--exclude-newer", rfc3339(request.as_of)]
                for name, cutoff in request.as_of_exceptions:
                    until = "false" if cutoff is None else rfc3339(cutoff)
                    command += ["--exclude-newer-package", f"{name}={until}"]
            for package in request.upgrade_packages:
                command += ["--upgrade-package", package]
            env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0:
                raise ResolutionError(_first_error_line(result.stderr))
            return pins_from_pylock(tomllib.loads(output.read_text(encoding="utf-8")), request.index_url)


def preference_pylock(preferences: tuple[tuple[str, str], ...]) -> str:
    """A PEP 751 file of bare name/version pins: what uv reads preferences from (it needs no files)."""
    lines = ['lock-version = "1.0"\n', 'created-by = "mlenv"\n']
    for name, version in sorted(preferences):
        lines.append(f"\n[[packages]]\nname = {json.dumps(name)}\nversion = {json.dumps(version)}\n")
    return "".join(lines)


def pins_from_pylock(data: dict[str, Any], default_index: str) -> list[PythonPin]:
    """Pins from a PEP 751 document as uv writes it (packages without files, e.g. editable, are refused)."""
    pins = []
    for package in data.get("packages", []):
        name = canonicalize_name(package["name"])
        wheels = tuple(_file(w) for w in package.get("wheels", []))
        sdist = _file(package["sdist"]) if "sdist" in package else None
        if not wheels and sdist is None:
            raise ResolutionError(f"{name} resolved to a source mlenv cannot pin by hash (no index files)")
        pins.append(
            PythonPin(
                name=name,
                version=package["version"],
                marker=package.get("marker"),
                index=redact(package.get("index", default_index)),
                requested=False,
                wheels=wheels,
                sdist=sdist,
            )
        )
    return pins


def _file(entry: dict[str, Any]) -> PythonFile:
    url = entry["url"]
    sha256 = entry.get("hashes", {}).get("sha256")
    if sha256 is None:
        raise ResolutionError(f"the index gave no sha256 for {url}")
    return PythonFile(
        name=entry.get("name") or url.rsplit("/", 1)[-1].split("#", 1)[0],
        url=redact(url),
        size=entry.get("size"),
        sha256=sha256,
        hash_source="index",
    )


def _first_error_line(stderr: str) -> str:
    """uv's explanation condensed to one line (its first error line and the reason under it)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "uv failed without a message"
    text = " ".join(lines[:4]).replace("× ", "").replace("╰─▶ ", "")
    return f"cannot resolve the Python requirements: {text}"
