"""apt's sources in the base image: one-line sources.list and deb822 .sources entries."""

from __future__ import annotations

import pytest

from mlenv.errors import SourceError
from mlenv.model.debian import SourceEntry
from mlenv.resolve.apt.sourceslist import parse_deb822_sources, parse_sources_list


def test_one_line_sources_are_parsed() -> None:
    text = (
        "# comment\n"
        "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/x.gpg] "
        "http://deb.debian.org/debian/ bookworm main contrib\n"
        "deb-src http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main  # trailing comment\n"
    )
    first, second = parse_sources_list(text, origin="/etc/apt/sources.list")
    assert first == SourceEntry(
        uri="http://deb.debian.org/debian",
        suite="bookworm",
        components=("main", "contrib"),
        architectures=("amd64", "arm64"),
        signed_by=("/usr/share/keyrings/x.gpg",),
        origin="/etc/apt/sources.list:2",
    )
    assert (second.uri, second.suite, second.origin) == (
        "http://deb.debian.org/debian-security",
        "bookworm-security",
        "/etc/apt/sources.list:4",
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("rpm http://x/ y z", "cannot read apt source line"),
        ("deb http://x/", "needs a URI and a suite"),
        ("deb [arch=amd64 http://x/ y z", "unclosed"),
        ("deb http://x/ ./ main", "flat repository .* cannot list components"),
        ("deb http://x/ bookworm", "lists no components"),
    ],
)
def test_bad_source_lines_name_the_file_and_line(line: str, problem: str) -> None:
    with pytest.raises(SourceError, match=rf"^list:1: .*{problem}"):
        parse_sources_list(line, origin="list")


def test_deb822_sources_expand_uris_and_suites() -> None:
    text = (
        "Types: deb deb-src\nURIs: http://a/debian http://b/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nArchitectures: amd64\n\n"
        "Types: deb-src\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://a/debian\nSuites: sid\nComponents: main\nEnabled: no\n"
    )
    entries = parse_deb822_sources(text, origin="debian.sources")
    assert [(e.uri, e.suite, e.architectures) for e in entries] == [
        ("http://a/debian", "bookworm", ("amd64",)),
        ("http://a/debian", "bookworm-updates", ("amd64",)),
        ("http://b/debian", "bookworm", ("amd64",)),
        ("http://b/debian", "bookworm-updates", ("amd64",)),
    ]
