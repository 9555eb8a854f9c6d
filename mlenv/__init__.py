"""mlenv: lock, build and verify ML environments so production runs exactly what was tested."""

from __future__ import annotations

from functools import cache


@cache
def _version() -> str:
    # importlib.metadata costs every command ~12 ms of start-up; only --version and a few artifacts ask.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlenv")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    """`mlenv.__version__`, read from the installed metadata on first use."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
