"""apt re-locks move only what they must, against the real Debian mirror.

The base is the cached debootstrap tree (bookworm, with python3), its sources set to Debian's image
layout (bookworm, bookworm-updates, bookworm-security), where many packages are served at two versions:
the point release's and a newer update. The first lock asks for the older ones by version, as an old
spec did; the relaxed spec names the packages only, so a fresh resolve moves all of them, and a re-lock
that prefers the first lock moves none; --upgrade-apt moves one (and what its exact Depends drag)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlenv.model.debian import Suite
from mlenv.model.lock import AptPin
from mlenv.model.spec import AptSpec
from mlenv.resolve.apt import AptBaseState, fetch_suites, lock_apt, read_base_state, resolve_apt
from mlenv.resolve.apt.sourceslist import parse_deb822_sources
from mlenv.resolve.apt.universe import Universe
from mlenv.resolve.upgrade import Upgrade, apt_preferences
from mlenv.sources.debian.archive import DebianArchive
from tests.lockdata import full_lock

pytestmark = pytest.mark.network

DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""
# Leaves whose Depends the base meets, and curl, whose Depends: libcurl4 (= its own version).
LEAVES = ("unzip", "zip", "patch", "lrzsz")
DRAGGED = ("curl", "libcurl4")


def tree_reader(root: Path) -> tuple[Any, Any]:
    def read(path: str) -> bytes | None:
        target = root / path.lstrip("/")
        return target.read_bytes() if target.is_file() else None

    def listdir(path: str) -> list[str]:
        target = root / path.lstrip("/")
        return sorted(p.name for p in target.iterdir()) if target.is_dir() else []

    return read, listdir


@pytest.fixture(scope="module")
def world(base_rootfs_python: Any) -> tuple[AptBaseState, tuple[Suite, ...]]:
    root = Path(
        base_rootfs_python if isinstance(base_rootfs_python, (str, Path)) else base_rootfs_python.path
    )
    state = read_base_state(*tree_reader(root))
    origin = "/etc/apt/sources.list.d/debian.sources"
    state = replace(state, sources=parse_deb822_sources(DEBIAN_SOURCES, origin=origin))
    return state, fetch_suites(state, DebianArchive())


@pytest.fixture(scope="module")
def older(world: tuple[AptBaseState, tuple[Suite, ...]]) -> dict[str, str]:
    """name -> the second-newest version the mirror serves (what an older lock pinned)."""
    state, suites = world
    universe = Universe(suites, state)
    found = {}
    for name in (*LEAVES, *DRAGGED):
        served = [v.version for v in universe.versions((name, state.architecture))]
        assert len(served) >= 2, f"the mirror serves {name} at {served} only: choose other packages here"
        assert (name, state.architecture) not in universe.installed, f"{name} is in the base"
        found[name] = served[1]
    return found


def resolve(
    world: tuple[AptBaseState, tuple[Suite, ...]], requests: list[str], prefer: dict[tuple[str, str], str]
) -> dict[str, AptPin]:
    state, suites = world
    return {p.name: p for p in resolve_apt(requests, state, suites, prefer=prefer).pins}


def preferences(pins: dict[str, AptPin], upgrade: Upgrade | None = None) -> dict[tuple[str, str], str]:
    """What `mlenv lock` hands the solver for an old lock holding `pins` (resolve.upgrade)."""
    lock = replace(full_lock(), apt=replace(full_lock().apt, packages=tuple(pins.values())))
    return apt_preferences(lock, upgrade or Upgrade())


RELAXED = [*LEAVES, *DRAGGED]


@pytest.fixture(scope="module")
def first(world: tuple[AptBaseState, tuple[Suite, ...]], older: dict[str, str]) -> dict[str, AptPin]:
    pins = resolve(world, [f"{name}={older[name]}" for name in RELAXED], {})
    assert {name: pins[name].version for name in RELAXED} == older
    return pins


@pytest.fixture(scope="module")
def fresh(world: tuple[AptBaseState, tuple[Suite, ...]]) -> dict[str, AptPin]:
    return resolve(world, RELAXED, {})


def changed(before: dict[str, AptPin], after: dict[str, AptPin]) -> set[str]:
    return {name for name, pin in after.items() if before.get(name) != pin}


def test_relaxing_the_versions_moves_nothing(
    world: tuple[AptBaseState, tuple[Suite, ...]], first: dict[str, AptPin], fresh: dict[str, AptPin]
) -> None:
    assert resolve(world, RELAXED, preferences(first)) == first  # every pin equal: version, .deb, sha256
    assert changed(first, fresh) >= set(RELAXED)  # ...where a resolve from scratch moves all six


def test_upgrade_moves_every_one(
    world: tuple[AptBaseState, tuple[Suite, ...]], first: dict[str, AptPin], fresh: dict[str, AptPin]
) -> None:
    assert preferences(first, Upgrade(everything=True)) == {}
    assert resolve(world, RELAXED, preferences(first, Upgrade(everything=True))) == fresh


def test_upgrade_apt_moves_one(
    world: tuple[AptBaseState, tuple[Suite, ...]], first: dict[str, AptPin], fresh: dict[str, AptPin]
) -> None:
    after = resolve(world, RELAXED, preferences(first, Upgrade(apt=("unzip",))))
    assert changed(first, after) == {"unzip"}
    assert after["unzip"] == fresh["unzip"]


def test_upgrade_apt_drags_what_an_exact_dependency_needs(
    world: tuple[AptBaseState, tuple[Suite, ...]], first: dict[str, AptPin], fresh: dict[str, AptPin]
) -> None:
    after = resolve(world, RELAXED, preferences(first, Upgrade(apt=("curl",))))
    # curl's newest Depends: libcurl4 (= its version), so the preference for the old libcurl4 gives way.
    assert changed(first, after) == {"curl", "libcurl4"}
    assert (after["curl"], after["libcurl4"]) == (fresh["curl"], fresh["libcurl4"])


def test_adding_a_package_moves_only_it_and_its_new_dependencies(
    world: tuple[AptBaseState, tuple[Suite, ...]], first: dict[str, AptPin]
) -> None:
    after = resolve(world, [*RELAXED, "libpng-tools"], preferences(first))
    alone = resolve(world, ["libpng-tools"], {})
    assert {name: after[name] for name in first} == first
    assert changed(first, after) == set(alone) == {"libpng-tools", "libpng16-16"}


def test_lock_apt_takes_the_preferences(
    world: tuple[AptBaseState, tuple[Suite, ...]], first: dict[str, AptPin]
) -> None:
    state, _ = world
    result = lock_apt(
        AptSpec(packages=tuple(RELAXED)), state, archive=DebianArchive(), prefer=preferences(first)
    )
    assert {p.name: p for p in result.pins} == first
