"""resolve_lock reads only through the Sources it is given: a recorded Python backend, and sources that
must not be asked when the spec does not need them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from mlenv.errors import ResolutionError
from mlenv.model.lock import PythonFile, PythonPin
from mlenv.model.spec import ResolverName
from mlenv.resolve import Sources, resolve_lock
from mlenv.resolve.apt import SuiteFetcher
from mlenv.sources.python.backend import PythonRequest, ResolverBackend
from mlenv.sources.registry import RegistryClient
from mlenv.spec import load_spec

WHEEL = PythonFile(
    name="six-1.16.0-py2.py3-none-any.whl",
    url="https://files.example/six-1.16.0-py2.py3-none-any.whl",
    size=11053,
    sha256="8a" * 32,
)


class Recorded:
    """A Python backend that answers from a table and records what it was asked."""

    name: ResolverName = "uv"

    def __init__(self) -> None:
        self.requests: list[PythonRequest] = []

    def resolve(self, request: PythonRequest) -> list[PythonPin]:
        self.requests.append(request)
        return [
            PythonPin(
                name="six",
                version="1.16.0",
                index="https://pypi.org/simple",
                requested=False,
                wheels=(WHEEL,),
            )
        ]


class Untouchable:
    """Stands for a source the spec does not need: any use fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the resolver used {name} of a source it does not need")


def sources(backend: Recorded, asked: list[str]) -> Sources:
    def python(name: ResolverName) -> ResolverBackend:
        asked.append(name)
        return backend

    def debian(mirror: str | None) -> SuiteFetcher:
        raise AssertionError(f"asked for an archive ({mirror})")

    def wheel_requires(urls: list[str]) -> Mapping[str, tuple[str, ...] | None]:
        raise AssertionError(f"asked for metadata of {urls}")

    registry: RegistryClient = Untouchable()  # type: ignore[assignment]
    return Sources(registry=registry, debian=debian, python=python, wheel_requires=wheel_requires)


def project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "mlenv.toml").write_text(
        'name = "demo"\nas-of = 2024-07-01T00:00:00Z\n\n[target]\npython = "3.11.2"\nglibc = "2.36"\n\n'
        f'[python]\nrequirements = ["six"]\n{extra}'
    )
    return tmp_path


def test_the_python_layer_comes_from_the_backend_the_sources_give(tmp_path: Path) -> None:
    backend, asked = Recorded(), []
    lock = resolve_lock(load_spec(project(tmp_path)), sources(backend, asked))
    assert asked == ["uv"]
    assert [(r.requirements, r.python_version, r.glibc, r.platform) for r in backend.requests] == [
        (("six",), "3.11.2", "2.36", "linux/amd64")
    ]
    assert [(p.name, p.version, p.requested, p.wheels) for p in lock.python.packages] == [
        ("six", "1.16.0", True, (WHEEL,))
    ]
    assert lock.base is None and lock.apt.packages == ()


def test_apt_packages_without_a_base_ask_no_archive(tmp_path: Path) -> None:
    spec = load_spec(project(tmp_path, '\n[apt]\npackages = ["curl"]\n'))
    with pytest.raises(ResolutionError, match="apt packages need a base image"):
        resolve_lock(spec, sources(Recorded(), []))
