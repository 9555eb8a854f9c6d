"""The pip-tools resolver backend: `pip-compile --generate-hashes` in the running interpreter.

pip-compile resolves for the interpreter it runs in, so it is offered only when that interpreter
matches the target; the files of each pin come from the index's JSON API, filtered by target tags,
and each hash pip-compile chose must be among them.
"""

from __future__ import annotations

import platform as host_platform
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import ResolutionError
from mlenv.files import work_directory
from mlenv.model.lock import PythonFile, PythonPin
from mlenv.model.spec import ResolverName
from mlenv.model.target import Target, machine, python_tuple, target_tags, wheel_installs
from mlenv.model.urls import redact
from mlenv.sources.python.backend import PythonRequest, requirements_input
from mlenv.sources.python.index import release_files


def host_mismatch(request: PythonRequest) -> str | None:
    """Why the running interpreter cannot stand in for the target, or None when it can."""
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    target_python = ".".join(str(p) for p in python_tuple(request.python_version))
    if host_python != target_python:
        return f"the target is Python {target_python} but mlenv runs on {host_python}"
    if sys.platform != "linux" or host_platform.machine() != machine(request.platform):
        return f"the target is {request.platform} but mlenv runs on {sys.platform}/{host_platform.machine()}"
    libc, host_glibc = host_platform.libc_ver()
    if libc != "glibc" or host_glibc != request.glibc:
        return f"the target has glibc {request.glibc} but this host has {libc} {host_glibc or 'unknown'}"
    return None


class PipToolsBackend:
    name: ResolverName = "pip-tools"

    def resolve(self, request: PythonRequest) -> list[PythonPin]:
        reason = host_mismatch(request)
        if reason is not None:
            raise ResolutionError(
                f"the pip-tools resolver resolves for the running interpreter only: {reason}",
                hint="set [python] resolver = 'uv', which resolves for the target",
            )
        if request.as_of is not None:
            raise ResolutionError(
                "as-of needs the uv resolver: pip-compile has no upload cut-off",
                hint="set [python] resolver = 'uv'",
            )
        pinned = self._compile(request)
        target = Target(platforms=(request.platform,), python=request.python_version, glibc=request.glibc)
        tags = target_tags(target, request.platform)
        pins = []
        for name, (version, hashes) in sorted(pinned.items()):
            wheels, sdist = [], None
            for file in release_files(request.index_url, name, version):
                if file.sha256 is None or file.sha256 not in hashes:
                    continue
                locked = PythonFile(
                    name=file.filename, url=redact(file.url), size=file.size, sha256=file.sha256
                )
                if file.is_wheel and wheel_installs(file.filename, tags):
                    wheels.append(locked)
                elif not file.is_wheel:
                    sdist = locked
            pins.append(
                PythonPin(
                    name=name,
                    version=version,
                    index=redact(request.index_url),
                    requested=False,
                    wheels=tuple(wheels),
                    sdist=sdist,
                )
            )
        return pins

    def _compile(self, request: PythonRequest) -> dict[str, tuple[str, frozenset[str]]]:
        with work_directory("piptools") as work:
            source = Path(work, "requirements.in")
            source.write_text(requirements_input(request, Path(work)), encoding="utf-8")
            output = Path(work, "requirements.txt")
            if request.preferences:
                # pip-compile keeps the pins of an existing output file that still satisfy the input.
                pins = "".join(f"{name}=={version}\n" for name, version in sorted(request.preferences))
                output.write_text(pins, encoding="utf-8")
            command = [
                sys.executable,
                "-m",
                "piptools",
                "compile",
                "--generate-hashes",
                "--no-header",
                "--no-annotate",
                "--strip-extras",
                "--quiet",
                "--no-config",
                "--index-url",
                request.index_url,
                "--output-file",
                str(output),
                str(source),
            ]
            for extra in request.extra_index_urls:
                command += ["--extra-index-url", extra]
            for package in request.upgrade_packages:
                command += ["--upgrade-package", package]
            result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=work)
            if result.returncode != 0:
                lines = [line for line in result.stderr.splitlines() if line.strip()]
                raise ResolutionError("pip-compile failed: " + (" ".join(lines[-3:]) or "no message"))
            return parse_hashed_requirements(output.read_text(encoding="utf-8"))


def parse_hashed_requirements(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """`name==version --hash=sha256:...` lines (with continuations) -> {name: (version, hashes)}."""
    joined = text.replace("\\\n", " ")
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        parts = line.split()
        requirement = Requirement(parts[0].split(";")[0])
        versions = [s.version for s in requirement.specifier if s.operator == "=="]
        hashes = frozenset(p.split(":", 1)[1] for p in parts[1:] if p.startswith("--hash=sha256:"))
        pins[canonicalize_name(requirement.name)] = (versions[0], hashes)
    return pins
