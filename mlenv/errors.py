"""Errors users can act on. Each carries a one-line message; the CLI maps them to exit codes."""

from __future__ import annotations


class MlenvError(Exception):
    """Base of every error mlenv reports to a user (exit code 2 unless a subclass says otherwise)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} (hint: {self.hint})"


class SpecError(MlenvError):
    """mlenv.toml (or [tool.mlenv]) is missing, unreadable or invalid. Names the file and key path."""

    def __init__(self, path: str, key: str | None, problem: str, *, hint: str | None = None) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.key = key


class LockfileError(MlenvError):
    """mlenv.lock is missing, unreadable, of an unknown version or structurally invalid."""

    def __init__(self, path: str, key: str | None, problem: str, *, hint: str | None = None) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.key = key


class ResolutionError(MlenvError):
    """The requirements cannot be satisfied for the target (python, apt, cuda)."""


class SourceError(MlenvError):
    """A registry, index or daemon could not be reached or answered with something unusable."""


class ImageError(MlenvError):
    """An image reference is malformed, or the image cannot be found or read."""


class BuildError(MlenvError):
    """The docker build failed or its inputs could not be fetched and checked."""
