"""The whole local stack the benchmarks and the demo stand on: an engine, a registry, the python base."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.localbase.dockerd import Daemon, engine
from tools.localbase.images import BaseImage, make_base_image
from tools.localbase.registry import Registry, serve_registry


@dataclass(frozen=True, kw_only=True)
class Stack:
    daemon: Daemon
    registry: Registry
    base: BaseImage  # Debian bookworm with python3 and venv, pushed to `registry`


@contextmanager
def local_stack(registry_dir: Path, *, timeout: int) -> Iterator[Stack]:
    """Attach to (or start) the engine, serve a registry from `registry_dir`, push the cached python base.

    The registry, and an engine started here, stop on exit. `timeout` is the engine client's, in seconds."""
    with engine(timeout=timeout) as daemon, serve_registry(registry_dir) as registry:
        yield Stack(daemon=daemon, registry=registry, base=make_base_image(daemon, registry, "python"))
