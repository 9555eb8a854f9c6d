"""Lock -> build context files (Dockerfile, .dockerignore, requirements, entrypoint). Pure: no IO.

The same lock always renders the same bytes, on any machine: every input is sorted, and nothing
host-specific (paths, times, user names) enters the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlenv.errors import BuildError
from mlenv.model.lock import Lock
from mlenv.model.lockcheck import first_problem
from mlenv.render.dockerfile import dockerfile_lines
from mlenv.render.dockerignore import DOCKERIGNORE
from mlenv.render.entrypoint import entrypoint_script, needs_entrypoint
from mlenv.render.requirements import requirement_lines, requirements_file

FetchMode = Literal["host", "build"]
CONTEXT_DIR = "mlenv"  # everything mlenv adds to the build context lives under this directory
WHEELS_DIR = f"{CONTEXT_DIR}/wheels"


@dataclass(frozen=True, kw_only=True)
class RenderedContext:
    """The generated files of a build context, by path relative to the context root."""

    files: tuple[tuple[str, bytes], ...]

    def get(self, path: str) -> bytes:
        return dict(self.files)[path]


def render(lock: Lock, *, lock_digest: str, mlenv_version: str, fetch: FetchMode = "host") -> RenderedContext:
    """Every generated file of the build context for `lock`."""
    if lock.base is None:
        raise BuildError("the lock has no base image; add [base] image to the spec and run `mlenv lock`")
    # The reader refuses such a lock; a Lock made some other way is held to the same grammar, since
    # its values become Dockerfile instructions and shell words.
    problem = first_problem(lock)
    if problem is not None:
        raise BuildError(f"the lock cannot be rendered: {problem[0]}: {problem[1]}")
    pins = requirement_lines(lock.python.packages, wheels_only=fetch == "host")
    requirements = requirements_file(pins)
    dockerfile = "".join(
        f"{line}\n"
        for line in dockerfile_lines(
            lock,
            lock_digest=lock_digest,
            mlenv_version=mlenv_version,
            fetch=fetch,
            context_dir=CONTEXT_DIR,
            wheels_dir=WHEELS_DIR,
        )
    )
    files = [
        ("Dockerfile", dockerfile.encode()),
        (".dockerignore", DOCKERIGNORE.encode()),
        (f"{CONTEXT_DIR}/requirements.txt", requirements.encode()),
    ]
    if needs_entrypoint(lock):
        files.append((f"{CONTEXT_DIR}/entrypoint.py", entrypoint_script(lock).encode()))
    return RenderedContext(files=tuple(sorted(files)))
