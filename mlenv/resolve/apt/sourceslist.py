"""apt's two formats for its sources: one-line sources.list and deb822 .sources (sources.list(5))."""

from __future__ import annotations

import re

from debian.deb822 import Deb822

from mlenv.errors import SourceError
from mlenv.model.debian import SourceEntry


def parse_sources_list(text: str, *, origin: str) -> tuple[SourceEntry, ...]:
    """The `deb` entries of a one-line-style sources.list (deb-src and comments skipped)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind == "deb-src":
            continue
        if kind != "deb":
            raise SourceError(f"{origin}:{number}: cannot read apt source line {raw.strip()!r}")
        options: dict[str, str] = {}
        rest = rest.strip()
        if rest.startswith("["):
            inside, bracket, rest = rest[1:].partition("]")
            if not bracket:
                raise SourceError(f"{origin}:{number}: unclosed [options] in {raw.strip()!r}")
            for option in inside.split():
                key, _, value = option.partition("=")
                options[key.rstrip("+-")] = value
        words = rest.split()
        if len(words) < 2:
            raise SourceError(f"{origin}:{number}: an apt source needs a URI and a suite: {raw.strip()!r}")
        uri, suite, components = words[0], words[1], tuple(words[2:])
        entries.append(
            _entry(
                uri,
                suite,
                components,
                options.get("arch", ""),
                options.get("signed-by", ""),
                f"{origin}:{number}",
            )
        )
    return tuple(entries)


def parse_deb822_sources(text: str, *, origin: str) -> tuple[SourceEntry, ...]:
    """The `deb` entries of a deb822-style .sources file, one per URI and suite."""
    entries = []
    for number, stanza in enumerate(Deb822.iter_paragraphs(text.splitlines(keepends=True)), start=1):
        fields = {k.lower(): v for k, v in stanza.items()}
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        uris, suites = fields.get("uris", "").split(), fields.get("suites", "").split()
        if not uris or not suites:
            raise SourceError(f"{origin}: stanza {number} needs URIs and Suites")
        components = tuple(fields.get("components", "").split())
        signed_by = _inline_key(fields.get("signed-by", ""))
        for uri in uris:
            for suite in suites:
                entries.append(
                    _entry(
                        uri,
                        suite,
                        components,
                        fields.get("architectures", ""),
                        signed_by,
                        f"{origin} stanza {number}",
                    )
                )
    return tuple(entries)


def _entry(
    uri: str, suite: str, components: tuple[str, ...], arch: str, signed_by: str, origin: str
) -> SourceEntry:
    if suite.endswith("/"):
        # A flat repository (NVIDIA's CUDA one: `deb URI /`): Release and Packages sit in URI/SUITE, with
        # no dists/ tree and no components; apt refuses components there.
        if components:
            raise SourceError(f"{origin}: flat repository {uri} {suite} cannot list components")
    elif not components:
        raise SourceError(f"{origin}: {uri} {suite} lists no components")
    if "BEGIN PGP" in signed_by:
        signers: tuple[str, ...] = (signed_by,)
    else:
        signers = tuple(s for s in re.split(r"[,\s]+", signed_by) if s)
    return SourceEntry(
        uri=uri.rstrip("/"),
        suite=suite,
        components=components,
        architectures=tuple(a for a in arch.replace(",", " ").split() if a),
        signed_by=signers,
        origin=origin,
    )


def _inline_key(value: str) -> str:
    # deb822 folds an inline key: continuation lines are indented and empty lines are written " .".
    if "BEGIN PGP" not in value:
        return value.strip()
    lines = [line.strip() for line in value.strip().splitlines()]
    return "\n".join("" if line == "." else line for line in lines) + "\n"
