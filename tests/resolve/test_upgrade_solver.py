"""The apt solver's preferences (the old lock's versions) on small synthetic worlds: kept while served and
sufficient, dropped exactly where a package needs past them."""

from __future__ import annotations

from mlenv.resolve.apt import AptResolution, resolve_apt

from .apt_universe import base, suite

LIBC = """
Package: libc6
Version: 2.36-9
Priority: required
Multi-Arch: same
"""

WORLD = """
Package: app
Version: 1.0
Depends: libapp (= 1.0)

Package: app
Version: 2.0
Depends: libapp (= 2.0)

Package: libapp
Version: 1.0

Package: libapp
Version: 2.0

Package: tool
Version: 1.0

Package: tool
Version: 1.1
"""


def pins(result: AptResolution) -> dict[str, str]:
    return {p.name: p.version for p in result.pins}


def resolve(requests: list[str], prefer: dict[tuple[str, str], str], *indexes: str) -> dict[str, str]:
    return pins(resolve_apt(requests, base(LIBC), [suite(i) for i in indexes], prefer=prefer))


OLD = {("app", "amd64"): "1.0", ("libapp", "amd64"): "1.0", ("tool", "amd64"): "1.0"}


def test_without_preferences_the_newest_is_installed() -> None:
    assert resolve(["app", "tool"], {}, WORLD) == {"app": "2.0", "libapp": "2.0", "tool": "1.1"}


def test_preferred_versions_are_kept_while_the_mirror_serves_them() -> None:
    assert resolve(["app", "tool"], OLD, WORLD) == {"app": "1.0", "libapp": "1.0", "tool": "1.0"}


def test_freeing_one_package_drags_along_only_what_it_needs() -> None:
    prefer = {k: v for k, v in OLD.items() if k[0] != "app"}
    # app 2.0 needs libapp (= 2.0): the preference for libapp gives way, tool's stays.
    assert resolve(["app", "tool"], prefer, WORLD) == {"app": "2.0", "libapp": "2.0", "tool": "1.0"}


def test_a_new_package_that_needs_a_newer_library_moves_it_and_nothing_else() -> None:
    world = WORLD + "\nPackage: new\nVersion: 1.0\nDepends: libapp (>= 2.0)\n"
    prefer = {("libapp", "amd64"): "1.0", ("tool", "amd64"): "1.0"}
    assert resolve(["libapp", "new", "tool"], prefer, world) == {"libapp": "2.0", "new": "1.0", "tool": "1.0"}


def test_a_breaks_on_the_preferred_version_moves_it() -> None:
    world = WORLD + "\nPackage: new\nVersion: 1.0\nBreaks: tool (<< 1.1)\n"
    assert resolve(["new", "tool"], {("tool", "amd64"): "1.0"}, world) == {"new": "1.0", "tool": "1.1"}


def test_a_version_the_mirror_no_longer_serves_is_no_preference() -> None:
    assert resolve(["tool"], {("tool", "amd64"): "0.9"}, WORLD) == {"tool": "1.1"}


def test_a_requested_version_beats_the_preference() -> None:
    assert resolve(["tool=1.1"], {("tool", "amd64"): "1.0"}, WORLD) == {"tool": "1.1"}


def test_a_preference_never_downgrades_the_base() -> None:
    installed = LIBC + "\n\nPackage: tool\nVersion: 1.1\n"
    result = resolve_apt(["tool"], base(installed), [suite(WORLD)], prefer={("tool", "amd64"): "1.0"})
    assert pins(result) == {}


def test_an_arch_all_pin_is_preferred_as_the_native_one() -> None:
    world = """
    Package: data
    Version: 1
    Architecture: all

    Package: data
    Version: 2
    Architecture: all
    """
    result = resolve_apt(["data"], base(LIBC), [suite(world)], prefer={("data", "all"): "1"})
    assert [(p.name, p.version, p.architecture) for p in result.pins] == [("data", "1", "all")]
