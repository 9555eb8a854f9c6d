"""The apt resolver on small synthetic worlds: every rule of apt's choice that decides a closure."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlenv.errors import ResolutionError
from mlenv.model.debian import SourceEntry, Suite
from mlenv.model.spec import AptSpec
from mlenv.resolve.apt import fetch_suites, is_base_state_path, lock_apt, parse_request, read_base_state

from .apt_universe import base, closure, resolve, suite

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "apt"

LIBC = """
Package: libc6
Version: 2.36-9
Priority: required
Multi-Arch: same
"""

# --------------------------------------------------------------------------- base state


def test_installed_packages_that_satisfy_are_left_alone() -> None:
    index = """
    Package: app
    Version: 1.0
    Depends: libc6 (>= 2.34), dpkg

    Package: libc6
    Version: 2.36-9
    """
    assert closure(["app"], LIBC, index) == {"app": "1.0"}


def test_installed_version_too_old_for_a_versioned_dependency_is_upgraded() -> None:
    index = """
    Package: app
    Version: 1.0
    Depends: libc6 (>= 2.37)

    Package: libc6
    Version: 2.37-1
    Multi-Arch: same
    """
    result = resolve(["app"], LIBC, index)
    assert {(p.name, p.version, p.requested) for p in result.pins} == {
        ("app", "1.0", True),
        ("libc6", "2.37-1", False),
    }


def test_essential_packages_are_not_reinstalled_or_upgraded_when_satisfied() -> None:
    index = """
    Package: dpkg
    Version: 1.21.23
    Essential: yes

    Package: tool
    Version: 1
    Pre-Depends: dpkg (>= 1.19)
    """
    assert closure(["tool"], "", index) == {"tool": "1"}


def test_a_requested_package_already_newest_gives_no_pin_and_a_note() -> None:
    index = """
    Package: libc6
    Version: 2.36-9
    Multi-Arch: same
    """
    result = resolve(["libc6"], LIBC, index)
    assert result.pins == ()
    assert any("already the newest version" in note for note in result.notes)


def test_a_requested_installed_package_with_a_newer_candidate_is_upgraded() -> None:
    index = """
    Package: libc6
    Version: 2.36-9+deb12u4
    Multi-Arch: same
    """
    assert closure(["libc6"], LIBC, index) == {"libc6": "2.36-9+deb12u4"}


# --------------------------------------------------------------------------- alternatives


def test_first_alternative_that_exists_wins() -> None:
    index = """
    Package: app
    Version: 1
    Depends: gone | second | third

    Package: second
    Version: 1

    Package: third
    Version: 1
    """
    assert closure(["app"], "", index) == {"app": "1", "second": "1"}


def test_an_alternative_whose_version_is_too_old_is_skipped() -> None:
    index = """
    Package: app
    Version: 1
    Depends: first (>= 2) | second

    Package: first
    Version: 1.5

    Package: second
    Version: 1
    """
    assert closure(["app"], "", index) == {"app": "1", "second": "1"}


def test_an_installed_alternative_satisfies_the_group() -> None:
    installed = """
    Package: second
    Version: 1
    """
    index = """
    Package: app
    Version: 1
    Depends: first | second

    Package: first
    Version: 1

    Package: second
    Version: 1
    """
    assert closure(["app"], installed, index) == {"app": "1"}


def test_upgrading_an_installed_alternative_beats_installing_the_first_one() -> None:
    # apt's getAllPossibleSolutions: candidates of installed packages come before new installs,
    # whatever their place in the or-group.
    installed = """
    Package: second
    Version: 1
    """
    index = """
    Package: app
    Version: 1
    Depends: first | second (>= 2)

    Package: first
    Version: 1

    Package: second
    Version: 2
    """
    assert closure(["app"], installed, index) == {"app": "1", "second": "2"}


def test_an_alternative_that_cannot_be_installed_falls_through_and_leaves_no_trace() -> None:
    index = """
    Package: app
    Version: 1
    Depends: first | second

    Package: first
    Version: 1
    Depends: missing-lib

    Package: second
    Version: 1
    """
    assert closure(["app"], "", index) == {"app": "1", "second": "1"}


def test_a_package_marked_earlier_satisfies_a_later_or_group() -> None:
    index = """
    Package: app
    Version: 1
    Depends: third, second | third

    Package: second
    Version: 1

    Package: third
    Version: 1
    """
    assert closure(["app"], "", index) == {"app": "1", "third": "1"}


def test_pre_depends_are_resolved_before_depends() -> None:
    # Had Depends gone first, `cc` would already satisfy the Pre-Depends group and `bb` stay out.
    index = """
    Package: pp
    Version: 1
    Pre-Depends: bb | cc
    Depends: cc

    Package: bb
    Version: 1

    Package: cc
    Version: 1
    """
    assert closure(["pp"], "", index) == {"pp": "1", "bb": "1", "cc": "1"}


def test_requested_packages_are_marked_before_any_dependency_is_chosen() -> None:
    index = """
    Package: app
    Version: 1
    Depends: first | second

    Package: first
    Version: 1

    Package: second
    Version: 1
    """
    assert closure(["app", "second"], "", index) == {"app": "1", "second": "1"}


# --------------------------------------------------------------------------- virtual packages


def test_a_virtual_dependency_with_one_provider_installs_it() -> None:
    index = """
    Package: app
    Version: 1
    Depends: mail-transport-agent

    Package: postfix
    Version: 3.7
    Provides: mail-transport-agent
    """
    assert closure(["app"], "", index) == {"app": "1", "postfix": "3.7"}


def test_an_installed_provider_satisfies_a_virtual_dependency() -> None:
    installed = """
    Package: mawk
    Version: 1.3.4
    Provides: awk
    """
    index = """
    Package: app
    Version: 1
    Depends: awk

    Package: gawk
    Version: 5.2
    Provides: awk
    Priority: required

    Package: mawk
    Version: 1.3.4
    Provides: awk
    """
    assert closure(["app"], installed, index) == {"app": "1"}


def test_among_providers_the_higher_priority_wins() -> None:
    index = """
    Package: app
    Version: 1
    Depends: awk

    Package: gawk
    Version: 5.2
    Provides: awk
    Priority: optional

    Package: mawk
    Version: 1.3.4
    Provides: awk
    Priority: required
    """
    assert closure(["app"], "", index) == {"app": "1", "mawk": "1.3.4"}


def test_a_real_package_of_the_dependency_name_beats_other_providers() -> None:
    index = """
    Package: app
    Version: 1
    Depends: foo

    Package: bar
    Version: 1
    Provides: foo
    Priority: required

    Package: foo
    Version: 1
    Provides: foo
    """
    assert closure(["app"], "", index) == {"app": "1", "foo": "1"}


def test_versioned_dependency_needs_a_versioned_provides() -> None:
    index = """
    Package: app
    Version: 1
    Depends: libfoo-abi (>= 2)

    Package: unversioned
    Version: 9
    Provides: libfoo-abi

    Package: old
    Version: 1
    Provides: libfoo-abi (= 1)

    Package: right
    Version: 1
    Provides: libfoo-abi (= 2)
    """
    assert closure(["app"], "", index) == {"app": "1", "right": "1"}


def test_requesting_a_virtual_package_with_one_provider_selects_it() -> None:
    index = """
    Package: postfix
    Version: 3.7
    Provides: mail-transport-agent
    """
    result = resolve(["mail-transport-agent"], "", index)
    assert [(p.name, p.requested) for p in result.pins] == [("postfix", True)]


def test_requesting_a_virtual_package_with_several_providers_asks_to_choose() -> None:
    index = """
    Package: gawk
    Version: 5.2
    Provides: awk

    Package: mawk
    Version: 1.3.4
    Provides: awk
    """
    with pytest.raises(ResolutionError, match=r"apt package awk is virtual, provided by gawk, mawk"):
        resolve(["awk"], "", index)


# --------------------------------------------------------------------------- architectures


def test_any_qualifier_is_satisfied_by_a_multi_arch_allowed_package() -> None:
    index = """
    Package: tool
    Version: 1
    Architecture: all
    Depends: python3:any

    Package: python3
    Version: 3.11.2
    Multi-Arch: allowed
    """
    assert closure(["tool"], "", index) == {"tool": "1", "python3": "3.11.2"}


def test_any_qualifier_is_not_satisfied_by_a_package_that_is_not_multi_arch_allowed() -> None:
    index = """
    Package: tool
    Version: 1
    Depends: python3:any

    Package: python3
    Version: 3.11.2
    """
    with pytest.raises(ResolutionError, match=r"cannot install tool: tool -> python3:any, which has no "):
        resolve(["tool"], "", index)


def test_multi_arch_foreign_satisfies_a_dependency_from_another_architecture() -> None:
    installed = """
    Package: tool
    Version: 1
    Multi-Arch: foreign
    """
    amd64 = """
    Package: tool
    Version: 1
    Multi-Arch: foreign
    """
    i386 = """
    Package: plugin
    Version: 2
    Architecture: i386
    Depends: tool
    """
    assert closure(["plugin:i386"], installed, amd64, suite(i386, arch="i386"), foreign=["i386"]) == {
        "plugin:i386": "2"
    }


def test_multi_arch_same_keeps_every_architecture_at_one_version() -> None:
    # libc6:i386 2 implicitly breaks libc6:amd64 != 2, so apt upgrades the installed amd64 one.
    installed = """
    Package: libc6
    Version: 1
    Multi-Arch: same
    """
    amd64 = """
    Package: libc6
    Version: 2
    Multi-Arch: same
    """
    i386 = """
    Package: libc6
    Version: 2
    Architecture: i386
    Multi-Arch: same
    """
    assert closure(["libc6:i386"], installed, amd64, suite(i386, arch="i386"), foreign=["i386"]) == {
        "libc6:i386": "2",
        "libc6": "2",
    }


def test_two_architectures_of_a_package_that_is_not_multi_arch_same_conflict() -> None:
    amd64 = """
    Package: python3
    Version: 3.11
    Multi-Arch: allowed
    """
    i386 = """
    Package: python3
    Version: 3.11
    Architecture: i386
    Multi-Arch: allowed
    """
    with pytest.raises(ResolutionError, match=r"conflicts with python3:i386"):
        resolve(["python3", "python3:i386"], "", amd64, suite(i386, arch="i386"), foreign=["i386"])


def test_a_name_only_built_for_a_foreign_architecture_means_that_architecture() -> None:
    i386 = """
    Package: wine32
    Version: 8.0
    Architecture: i386
    """
    assert closure(["wine32"], "", "", suite(i386, arch="i386"), foreign=["i386"]) == {"wine32:i386": "8.0"}


def test_an_unconfigured_architecture_is_refused() -> None:
    with pytest.raises(ResolutionError, match=r"architecture arm64 is not configured"):
        resolve(["libgomp1:arm64"], "", "Package: libgomp1\nVersion: 1")


def test_arch_all_pins_keep_their_architecture() -> None:
    index = """
    Package: data
    Version: 1
    Architecture: all
    """
    assert [(p.name, p.architecture) for p in resolve(["data"], "", index).pins] == [("data", "all")]


# --------------------------------------------------------------------------- upgrades apt makes on the side


def test_installed_binaries_of_the_same_source_are_upgraded_together() -> None:
    installed = """
    Package: libfoo1
    Version: 1.0
    Source: foo

    Package: foo-bin
    Version: 1.0
    Source: foo
    """
    index = """
    Package: app
    Version: 1
    Depends: libfoo1 (>= 2)

    Package: libfoo1
    Version: 2.0
    Source: foo

    Package: foo-bin
    Version: 2.0
    Source: foo
    """
    assert closure(["app"], installed, index) == {"app": "1", "libfoo1": "2.0", "foo-bin": "2.0"}


def test_breaks_against_an_installed_package_upgrades_it() -> None:
    installed = """
    Package: old
    Version: 1
    """
    index = """
    Package: app
    Version: 1
    Breaks: old (<< 2)

    Package: old
    Version: 2
    """
    assert closure(["app"], installed, index) == {"app": "1", "old": "2"}


def test_an_installed_package_whose_exact_dependency_an_upgrade_breaks_is_upgraded_too() -> None:
    installed = """
    Package: libq
    Version: 1

    Package: q-tools
    Version: 1
    Depends: libq (= 1)
    """
    index = """
    Package: app
    Version: 1
    Depends: libq (>= 2)

    Package: libq
    Version: 2

    Package: q-tools
    Version: 2
    Depends: libq (= 2)
    """
    assert closure(["app"], installed, index) == {"app": "1", "libq": "2", "q-tools": "2"}


def test_a_conflict_with_an_installed_package_that_cannot_be_upgraded_is_an_error() -> None:
    installed = """
    Package: sysvinit-core
    Version: 3
    """
    index = """
    Package: systemd-sysv
    Version: 252
    Conflicts: sysvinit-core

    Package: sysvinit-core
    Version: 3
    """
    with pytest.raises(ResolutionError, match=r"remove sysvinit-core from the base"):
        resolve(["systemd-sysv"], installed, index)


def test_a_held_package_is_not_upgraded() -> None:
    installed = """
    Package: libq
    Version: 1
    Status: hold ok installed
    """
    index = """
    Package: app
    Version: 1
    Depends: libq (>= 2)

    Package: libq
    Version: 2
    """
    with pytest.raises(ResolutionError, match=r"app -> libq \(>= 2\), which is held"):
        resolve(["app"], installed, index)


# --------------------------------------------------------------------------- candidates and requests


def test_the_candidate_is_the_highest_version_of_every_source() -> None:
    main = """
    Package: curl
    Version: 7.88.1-10+deb12u5
    """
    security = """
    Package: curl
    Version: 7.88.1-10+deb12u8
    """
    assert closure(["curl"], "", main, suite(security, name="bookworm-security")) == {
        "curl": "7.88.1-10+deb12u8"
    }


def test_not_automatic_suites_are_used_only_when_asked_for_by_version() -> None:
    main = "Package: curl\nVersion: 7.88"
    backports = suite("Package: curl\nVersion: 8.5", name="bookworm-backports", not_automatic=True)
    assert closure(["curl"], "", main, backports) == {"curl": "7.88"}
    assert closure(["curl=8.5"], "", main, backports) == {"curl": "8.5"}


def test_a_requested_version_is_installed_even_when_not_the_newest() -> None:
    index = """
    Package: curl
    Version: 7.88

    Package: curl
    Version: 7.90
    """
    result = resolve(["curl=7.88"], "", index)
    assert [(p.name, p.version, p.requested) for p in result.pins] == [("curl", "7.88", True)]


def test_a_version_that_is_not_available_lists_the_available_ones() -> None:
    index = """
    Package: curl
    Version: 7.88

    Package: curl
    Version: 7.90
    """
    with pytest.raises(
        ResolutionError, match=r"^apt package curl=9 is not available \(available: 7\.90, 7\.88\)$"
    ):
        resolve(["curl=9"], "", index)


def test_an_unknown_package_is_a_resolution_error() -> None:
    with pytest.raises(
        ResolutionError, match=r"^unknown apt package nope \(in none of the base's sources\)$"
    ):
        resolve(["nope"], "", "Package: curl\nVersion: 1")


def test_an_unsatisfiable_dependency_names_the_chain() -> None:
    index = """
    Package: foo
    Version: 1
    Depends: libbar (>= 2)

    Package: libbar
    Version: 2
    Depends: libbaz
    """
    with pytest.raises(ResolutionError) as error:
        resolve(["foo"], "", index)
    assert (
        str(error.value)
        == "cannot install foo: foo -> libbar (>= 2) -> libbaz, which has no installable candidate"
    )
    assert error.value.exit_code == 2


def test_a_dependency_on_a_version_nobody_has_lists_what_there_is() -> None:
    index = """
    Package: foo
    Version: 1
    Depends: libbar (>= 3)

    Package: libbar
    Version: 2
    """
    with pytest.raises(
        ResolutionError,
        match=r"foo -> libbar \(>= 3\), which has no installable candidate "
        r"\(available: 2\)$",
    ):
        resolve(["foo"], "", index)


@pytest.mark.parametrize(
    ("text", "name", "arch", "version"),
    [
        ("curl", "curl", None, None),
        ("curl=7.88.1-10+deb12u5", "curl", None, "7.88.1-10+deb12u5"),
        ("libc6:i386", "libc6", "i386", None),
        ("libc6:i386=2.36-9", "libc6", "i386", "2.36-9"),
        ("libstdc++6", "libstdc++6", None, None),
    ],
)
def test_requests_are_parsed(text: str, name: str, arch: str | None, version: str | None) -> None:
    request = parse_request(text)
    assert (request.name, request.architecture, request.version) == (name, arch, version)


@pytest.mark.parametrize("text", ["Curl", "curl=", "-x", "curl/bookworm-backports", "a:b:c"])
def test_bad_requests_are_refused(text: str) -> None:
    with pytest.raises(ResolutionError):
        parse_request(text)


def test_pins_carry_the_deb_and_are_sorted_and_repeatable() -> None:
    index = """
    Package: zed
    Version: 1
    Depends: alpha

    Package: alpha
    Version: 2
    """
    first = resolve(["zed"], "", index)
    assert first == resolve(["zed"], "", index)
    assert [p.name for p in first.pins] == ["alpha", "zed"]
    alpha = first.pins[0]
    assert alpha.filename == "pool/main/a/alpha/alpha_2_amd64.deb" and alpha.size == 1005
    assert len(alpha.sha256) == 64 and not alpha.requested
    assert first.sources[0].suite == "bookworm"


# --------------------------------------------------------------------------- reading the base


def _tree_reader(root: Path):  # type: ignore[no-untyped-def]
    def read(path: str) -> bytes | None:
        target = root / path.lstrip("/")
        return target.read_bytes() if target.is_file() else None

    def listdir(path: str) -> list[str]:
        target = root / path.lstrip("/")
        return sorted(p.name for p in target.iterdir()) if target.is_dir() else []

    return read, listdir


def test_base_state_is_read_from_the_image_files() -> None:
    state = read_base_state(*_tree_reader(FIXTURES / "tree"))
    assert state.architecture == "amd64"
    assert state.foreign_architectures == ("i386",)
    assert sorted(r["Package"] for r in state.installed) == ["dpkg", "libc6", "mawk"]  # config-files dropped
    entries = [(e.uri, e.suite, e.components, e.architectures) for e in state.sources]
    assert entries == [
        ("http://deb.debian.org/debian", "bookworm", ("main", "contrib"), ("amd64",)),
        ("http://deb.debian.org/debian", "bookworm", ("main",), ()),
        ("http://deb.debian.org/debian", "bookworm-updates", ("main",), ()),
        ("http://deb.debian.org/debian-security", "bookworm-security", ("main",), ()),
    ]
    assert state.sources[1].signed_by == ("/usr/share/keyrings/debian-archive-keyring.gpg",)
    assert "BEGIN PGP PUBLIC KEY BLOCK" in state.sources[3].signed_by[0]
    assert "\n\n" in state.sources[3].signed_by[0]  # the folded " ." line is an empty line again
    assert [k.path for k in state.keyrings] == [
        "/etc/apt/trusted.gpg.d/debian-archive-bookworm-stable.asc",
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    ]
    assert any("preferences" in note for note in state.notes)


def test_a_base_without_dpkg_is_refused() -> None:
    with pytest.raises(ResolutionError, match=r"no /var/lib/dpkg/status"):
        read_base_state(lambda path: None, lambda path: [])


def test_every_file_the_base_state_reads_is_declared() -> None:
    asked: list[str] = []
    read, listdir = _tree_reader(FIXTURES / "tree")

    def recording(path: str) -> bytes | None:
        asked.append(path)
        return read(path)

    read_base_state(recording, listdir)
    assert asked and all(is_base_state_path(path) for path in asked)
    assert not is_base_state_path("/usr/bin/apt-get")


class Offline:
    """An archive that must not be asked."""

    def fetch_suite(self, entry: SourceEntry, **_: object) -> Suite:
        raise AssertionError(f"fetched {entry.uri} {entry.suite}")


def test_no_apt_packages_means_no_apt_section_and_no_network() -> None:
    result = lock_apt(AptSpec(), base(), archive=Offline())
    assert (result.pins, result.sources) == ((), ())


def test_a_base_without_apt_sources_is_refused() -> None:
    with pytest.raises(ResolutionError, match=r"lists no apt sources"):
        fetch_suites(base(), Offline())
