"""Debian archives as data: apt source entries, keyrings, and the suites fetched from them. No IO.

sources/debian fetches and verifies suites; resolve/apt reads the base image's entries and keyrings and
resolves against the suites. Both meet here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from debian.deb822 import Packages

from mlenv.model.lock import AptPin, AptSource

# What apt trusts for a source without Signed-By: this keyring and *.gpg / *.asc in this directory.
TRUSTED_KEYRING = "/etc/apt/trusted.gpg"
TRUSTED_KEYRING_DIR = "/etc/apt/trusted.gpg.d"

# One package stanza (of a Packages index or the dpkg status), field name -> value.
Record = Mapping[str, str]

# The Packages fields the resolver and the lock use; the rest (descriptions, maintainers...) is dropped
# on parsing, which is most of the index's size.
RECORD_FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Multi-Arch",
    "Essential",
    "Important",
    "Protected",
    "Priority",
    "Source",
    "Pre-Depends",
    "Depends",
    "Conflicts",
    "Breaks",
    "Provides",
    "Filename",
    "Size",
    "SHA256",
)


@dataclass(frozen=True, kw_only=True)
class SourceEntry:
    """One `deb` line (or one suite of a deb822 stanza) of the base image's apt sources."""

    uri: str
    suite: str
    components: tuple[str, ...]
    architectures: tuple[str, ...] = ()  # the [arch=...] option; empty = every configured architecture
    signed_by: tuple[str, ...] = ()  # keyring paths, key fingerprints, or one inline armored key
    origin: str = ""  # file:line, for messages


@dataclass(frozen=True, kw_only=True)
class Keyring:
    path: str  # where it lives in the image
    data: bytes


@dataclass(frozen=True, kw_only=True)
class PackagesIndex:
    url: str
    component: str
    architecture: str
    sha256: str
    records: tuple[Record, ...] = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Suite:
    """One fetched suite of one archive: its verified Release facts and Packages indexes."""

    entry: SourceEntry
    source: AptSource  # what the lock records
    date: datetime
    not_automatic: bool  # NotAutomatic: yes (e.g. experimental, backports): apt never picks it by itself
    indexes: tuple[PackagesIndex, ...]
    notes: tuple[str, ...] = ()


def parse_packages(data: bytes) -> tuple[Record, ...]:
    """The stanzas of a (decompressed) Packages index, reduced to RECORD_FIELDS."""
    records = []
    for stanza in Packages.iter_paragraphs(
        data.splitlines(keepends=True), use_apt_pkg=False, fields=list(RECORD_FIELDS)
    ):
        record = {k: str(v) for k, v in stanza.items()}
        if "Package" in record and "Version" in record:
            records.append(record)
    return tuple(records)


def deb_urls(sources: tuple[AptSource, ...], pin: AptPin) -> tuple[str, ...]:
    """Where a pinned .deb is fetched from, in order: each mirror's pool path, then each snapshot archive's
    (which keeps every version Debian published, long after the mirror dropped it). The sha256 decides.
    A pin from a source with no snapshot service (a flat third-party repository) is at its recorded URL."""
    if pin.url is not None:
        return (pin.url,)
    # A source with no snapshot service records its pins' URLs: its mirror holds none of the others.
    mirrors = [s.mirror.rstrip("/") for s in sources if not s.no_snapshot]
    snapshots = [s.snapshot.rstrip("/") for s in sources if s.snapshot]
    return tuple(dict.fromkeys(f"{root}/{pin.filename}" for root in (*mirrors, *snapshots)))
