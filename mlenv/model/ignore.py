"""What of a project must never reach an image, as data: the generated .dockerignore is written from these
rules, the app copy is packed through them, and verify's policy findings name the same secret-like and
training-data files in an image.

Patterns follow .dockerignore: relative to the project directory, `*` and `?` within one path component,
`**` across any number of them; a pattern that matches a directory excludes what is under it.

Three kinds: "noise" (caches, version control, virtual environments) is left out silently; "secret"
and "data" (training data) in an app copy make the build refuse, unless the spec allows the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

IgnoreKind = Literal["noise", "secret", "data"]


@dataclass(frozen=True, kw_only=True)
class IgnoreSection:
    comment: str
    kind: IgnoreKind
    patterns: tuple[str, ...]


SECTIONS: tuple[IgnoreSection, ...] = (
    IgnoreSection(comment="Version control and editor state", kind="noise", patterns=(
        ".git", "**/.git", "**/.hg", "**/.svn", ".idea", ".vscode",
    )),
    IgnoreSection(
        comment="Virtual environments and caches: the image gets its Python packages from mlenv.lock only",
        kind="noise",
        patterns=(
            ".venv", "**/.venv", "venv", "env", "**/__pycache__", "**/*.py[cod]", "**/.pytest_cache",
            "**/.mypy_cache",
            ".ruff_cache", ".tox", ".nox", "**/.DS_Store",
        ),
    ),
    IgnoreSection(comment="Notebooks", kind="noise", patterns=("**/*.ipynb", "**/.ipynb_checkpoints")),
    IgnoreSection(comment="Data sets", kind="noise", patterns=("data", "datasets", "raw")),
    IgnoreSection(comment="Training data", kind="data", patterns=("**/data/raw", "**/data/processed")),
    IgnoreSection(comment="Secrets", kind="secret", patterns=(
        ".env", ".env.*", "**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_rsa*",
        "**/config/secrets.yaml", "**/.netrc", "**/.pypirc", "**/.docker", "**/.aws", "**/.gcp",
    )),
    IgnoreSection(comment="Tests and build output", kind="noise", patterns=(
        "tests", "test", "build", "dist", "*.egg-info",
    )),
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class IgnoreMatch:
    path: str  # the project-relative path that matched (the file, or the directory above it)
    pattern: str
    kind: IgnoreKind


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        char = pattern[index]
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", index)
            out.append(pattern[index : end + 1])
            index = end + 1
            continue
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


_SEVERITY: tuple[IgnoreKind, ...] = ("secret", "data", "noise")


def ignore_match(relative: str) -> IgnoreMatch | None:
    """The rule that excludes `relative` (a project-relative path) or a directory above it: a secret
    or training-data rule before a noise one (data/raw is training data, though `data` is ignored too),
    then the outermost path."""
    parts = relative.strip("/").split("/")
    found: list[IgnoreMatch] = []
    for depth in range(1, len(parts) + 1):
        candidate = "/".join(parts[:depth])
        for section in SECTIONS:
            for pattern in section.patterns:
                if _regex(pattern).fullmatch(candidate):
                    found.append(IgnoreMatch(path=candidate, pattern=pattern, kind=section.kind))
    return min(found, key=lambda m: _SEVERITY.index(m.kind), default=None)


def secret_like(path: str) -> IgnoreMatch | None:
    """`path` (anywhere: relative or absolute in an image) as a secret or training-data match, else None."""
    found = ignore_match(path)
    return found if found is not None and found.kind != "noise" else None
