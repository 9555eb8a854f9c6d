"""Debian archives: the signed Release files and Packages indexes of apt sources, fetched and checked.

The only apt code that touches the network. Everything fetched is checked before use: the Release
file's signature with `gpgv` against the keyrings found in the base image (as apt would, release.py),
every Packages index against the sha256 that Release lists. Indexes are cached by that sha256, so a
re-lock against an unchanged mirror downloads only the small InRelease files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import requests
from debian.deb822 import Release

from mlenv.errors import SourceError
from mlenv.files import write_atomic
from mlenv.model.debian import (
    RECORD_FIELDS,
    Keyring,
    PackagesIndex,
    Record,
    SourceEntry,
    Suite,
    parse_packages,
)
from mlenv.model.lock import AptSource
from mlenv.model.urls import redact
from mlenv.sources.cas import ContentStore, cache_root
from mlenv.sources.debian.release import (
    Verified,
    apply_mirror,
    archive_name,
    configured_snapshot_root,
    distribution,
    is_distribution_archive,
    note_expiry,
    release_date,
    snapshot_root,
    snapshot_timestamp,
    snapshot_url,
    timestamp_in,
    verify_release,
)

TIMEOUT = (15, 120)
# Bumped whenever the parsed form written to the cache changes shape.
PARSED_FORMAT = 1


# --------------------------------------------------------------------------- the cache


class IndexCache:
    """Downloaded indexes in a content store (checked on read), and their parsed records beside them."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_root() / "apt"
        self.blobs = ContentStore(self.root)

    def _parsed(self, sha256: str) -> Path:
        return self.root / "parsed" / f"{sha256}.v{PARSED_FORMAT}.json"

    def get(self, sha256: str) -> bytes | None:
        return self.blobs.get_bytes(sha256)

    def put(self, sha256: str, data: bytes, *, what: str) -> None:
        self.blobs.put_stream(sha256, [data], what=what)

    def get_records(self, sha256: str) -> tuple[Record, ...] | None:
        try:
            document = json.loads(self._parsed(sha256).read_text())
        except (OSError, ValueError):
            return None
        if document.get("format") != PARSED_FORMAT or document.get("fields") != list(RECORD_FIELDS):
            return None
        return tuple(
            {k: v for k, v in zip(RECORD_FIELDS, row, strict=True) if v is not None}
            for row in document["records"]
        )

    def put_records(self, sha256: str, records: Sequence[Record]) -> None:
        rows = [[r.get(f) for f in RECORD_FIELDS] for r in records]
        document = {"format": PARSED_FORMAT, "fields": list(RECORD_FIELDS), "records": rows}
        # A derived file, rebuilt from the index when unreadable: not worth a flush to disk.
        data = json.dumps(document, separators=(",", ":")).encode()
        write_atomic(self._parsed(sha256), data, durable=False)


# --------------------------------------------------------------------------- fetching


def is_flat(entry: SourceEntry) -> bool:
    """A flat repository (`deb URI DIR/`): Release and Packages in URI/DIR, no dists/ tree, no components."""
    return entry.suite.endswith("/")


def _flat_filename(record: Record) -> Record:
    # Flat repositories write Filename as `./name.deb`; the lock keeps the plain path below the URI.
    filename = record.get("Filename", "")
    if not filename.startswith("./"):
        return record
    return {**record, "Filename": filename[2:]}


@dataclass(frozen=True, kw_only=True)
class _ReadSuite:
    """One suite's checked Release and indexes, before the lock's source record is chosen for it."""

    dists: str
    verified: Verified
    release: Release
    date: datetime
    indexes: tuple[PackagesIndex, ...]
    notes: list[str]

    def suite(self, entry: SourceEntry, source: AptSource, notes: Sequence[str]) -> Suite:
        return Suite(
            entry=entry,
            source=source,
            date=self.date,
            not_automatic=self.release.get("NotAutomatic", "").strip().lower() == "yes",
            indexes=self.indexes,
            notes=tuple(notes),
        )


class DebianArchive:
    """Fetches and checks the Release and Packages indexes of apt sources.

    `mirror` replaces each source's URI (see apply_mirror); `gpgv` names the verifier (looked up on
    PATH); None does not verify, which every fetched suite then notes. `snapshot_root` is one snapshot
    service for every archive (default: $MLENV_SNAPSHOT_URL, else each distribution's own: Debian's,
    Ubuntu's); "" for none.
    """

    def __init__(
        self,
        *,
        mirror: str | None = None,
        cache: IndexCache | None = None,
        session: requests.Session | None = None,
        gpgv: str | None = "gpgv",
        snapshot_root: str | None = None,
    ) -> None:
        self.mirror = mirror
        self.snapshot_root = (
            configured_snapshot_root() if snapshot_root is None else snapshot_root.rstrip("/")
        )
        self.cache = cache or IndexCache()
        self.http = session or requests.Session()
        # None (or a verifier not on PATH) means Releases are not verified; every suite then says so.
        self.gpgv = shutil.which(gpgv) if gpgv else None

    def fetch_suite(
        self,
        entry: SourceEntry,
        *,
        architectures: Sequence[str],
        keyrings: Sequence[Keyring],
        listed: Iterable[str] = (),
        as_of: datetime | None = None,
    ) -> Suite:
        """`entry`'s suite for `architectures`, its Release verified with `keyrings`. `listed` holds the URIs
        of the base's other sources: a mirror that names one of their archives moves them all.

        With `as_of`, a Debian or Ubuntu archive is read from its snapshot service as it was then; only
        when no snapshot service answers is the mirror (today's state) used, and the source says so
        (resolved-from = "mirror"), so `mlenv lock` can name the pins that may be newer than as-of."""
        archives = {archive_name(uri) for uri in (*listed, entry.uri)}
        # The spec's mirror is for the distribution's archives, and only their snapshot services keep old
        # .debs: a vendor's repository keeps its URI and has no snapshots.
        own = is_distribution_archive(entry)
        base_uri = apply_mirror(entry.uri, self.mirror, archives) if own else entry.uri
        notes: list[str] = []
        root = snapshot_root(entry.uri, self.snapshot_root) if own else None
        if as_of is not None and root is not None:
            read = self._snapshot_suite(entry, as_of, root, architectures, keyrings, notes)
            if read is not None:
                return read
        read_mirror = self._read_suite(base_uri, entry, architectures, keyrings)
        notes += read_mirror.notes
        release = read_mirror.release
        timestamp = snapshot = None
        resolved_from: Literal["snapshot", "mirror"] | None = None
        # Debian's and Ubuntu's snapshot services keep only their own archives: anything else (a flat
        # vendor repository, a Release from another Origin) is a third party, with no snapshots at all.
        third_party = not own or release.get("Origin", "") != distribution(entry.uri)
        date = read_mirror.date
        if third_party and as_of is not None:
            notes.append(
                f"{redact(read_mirror.dists)} has no snapshot service: its pins are as it is now (its "
                f"Release is dated {date.isoformat()}), not as of {as_of.isoformat()}"
            )
        if not third_party:
            if as_of is not None and as_of < date:
                notes.append(
                    f"{read_mirror.dists} is dated {date.isoformat()}, after as-of {as_of.isoformat()}: "
                    "the pins reflect the mirror, not the as-of time"
                )
            # The mirror's state is the snapshot archive's at the mirror's date: the .debs stay there.
            # A lock fetches over https from anywhere but its mirrors, so a plain-http snapshot root
            # (a local service) is recorded only when the pins came from it (it is then the mirror).
            timestamp = snapshot_timestamp(date)
            https = root if (root or "").startswith("https://") else None
            snapshot = snapshot_url(entry.uri, timestamp, https)
            resolved_from = "mirror"
        return read_mirror.suite(
            entry,
            AptSource(
                mirror=redact(base_uri),
                suite=entry.suite,
                components=entry.components,
                snapshot=snapshot,
                snapshot_timestamp=timestamp,
                signed_by=read_mirror.verified.keyring,
                resolved_from=resolved_from,
                no_snapshot=third_party,
            ),
            notes,
        )

    def _snapshot_suite(
        self,
        entry: SourceEntry,
        as_of: datetime,
        service: str,
        architectures: Sequence[str],
        keyrings: Sequence[Keyring],
        notes: list[str],
    ) -> Suite | None:
        """The suite as the snapshot archive holds it at `as_of`, or None (noted) when the service does
        not answer or has no such suite. A snapshot that answers but fails its checks is an error."""
        requested = snapshot_url(entry.uri, snapshot_timestamp(as_of), service)
        try:
            found = self._locate(f"{requested}dists/{entry.suite}/InRelease")
        except SourceError as error:
            notes.append(f"no snapshot archive for as-of: {error}")
            return None
        if found is None:
            notes.append(f"the snapshot archive has no {redact(requested)}dists/{entry.suite}/InRelease")
            return None
        # The service answers any time with the newest import at or before it, by a redirect.
        timestamp = timestamp_in(found) or snapshot_timestamp(as_of)
        root = snapshot_url(entry.uri, timestamp, service).rstrip("/")
        read = self._read_suite(root, entry, architectures, keyrings)
        origin = distribution(entry.uri)
        if read.release.get("Origin", "") != origin:
            raise SourceError(
                f"{redact(read.dists)}: the snapshot archive serves a Release not from {origin}"
            )
        if read.date > as_of:
            raise SourceError(
                f"{redact(read.dists)} is dated {read.date.isoformat()}, after as-of {as_of.isoformat()}",
                hint="the snapshot service answered with a later import than asked for",
            )
        source = AptSource(
            mirror=redact(root),
            suite=entry.suite,
            components=entry.components,
            snapshot=redact(f"{root}/"),
            snapshot_timestamp=timestamp,
            signed_by=read.verified.keyring,
            resolved_from="snapshot",
        )
        return read.suite(entry, source, [*notes, *read.notes])

    def _read_suite(
        self, base_uri: str, entry: SourceEntry, architectures: Sequence[str], keyrings: Sequence[Keyring]
    ) -> _ReadSuite:
        """The verified Release and the Packages indexes of `entry`'s suite under `base_uri`."""
        flat = is_flat(entry)
        if flat:
            directory = entry.suite.strip("/")
            dists = f"{base_uri}/{directory}" if directory else base_uri
        else:
            dists = f"{base_uri}/dists/{entry.suite}"
        notes: list[str] = []

        signed = self._get_optional(f"{dists}/InRelease")
        if signed is not None:
            verified = verify_release(signed, None, entry=entry, keyrings=keyrings, gpgv=self.gpgv)
        else:
            plain = self._get(f"{dists}/Release")
            detached = self._get_optional(f"{dists}/Release.gpg")
            if detached is None:
                verified = Verified(
                    content=plain,
                    keyring=None,
                    note=f"{dists} has no InRelease and no Release.gpg: its Release is NOT verified",
                )
            else:
                verified = verify_release(plain, detached, entry=entry, keyrings=keyrings, gpgv=self.gpgv)
        if verified.note:
            notes.append(verified.note)

        release = Release(verified.content.decode("utf-8", errors="replace").splitlines(keepends=True))
        names = {release.get("Suite", ""), release.get("Codename", "")}
        # A flat repository's Release names no suite (NVIDIA's says Origin and Label only).
        if not flat and entry.suite not in names:
            raise SourceError(
                f"{dists}: the Release is for {release.get('Codename') or release.get('Suite')!r}, "
                f"not {entry.suite!r}",
                hint="the mirror serves a different distribution",
            )
        date = release_date(release, dists)
        note_expiry(release, dists, notes)

        listed = {item["name"]: item for item in release.get("SHA256", [])}
        by_hash = release.get("Acquire-By-Hash", "no").strip().lower() == "yes"
        archs = list(dict.fromkeys(architectures))
        release_archs = release.get("Architectures", "").split()
        if "all" in release_archs and release.get("No-Support-for-Architecture-all", "") != "Packages":
            archs.append("all")  # arch:all packages live only in binary-all here
        indexes = []
        if flat:
            index = self._fetch_index(dists, "Packages", listed, by_hash, component="", arch="")
            if index is None:
                raise SourceError(f"{dists}: its Release lists no Packages index")
            # One index holds every architecture; apt keeps those it is configured for (and all).
            wanted = {*archs, "all"}
            records = tuple(r for r in index.records if r.get("Architecture", "all") in wanted)
            indexes.append(replace(index, records=tuple(_flat_filename(r) for r in records)))
        for component in entry.components:
            for arch in archs:
                stem = f"{component}/binary-{arch}/Packages"
                index = self._fetch_index(dists, stem, listed, by_hash, component=component, arch=arch)
                if index is None:
                    if arch != "all":
                        notes.append(f"{dists} lists no Packages index for {component}/binary-{arch}")
                    continue
                indexes.append(index)
        if not indexes:
            raise SourceError(
                f"{dists}: no Packages index for {', '.join(entry.components)} on {', '.join(archs)}"
            )
        return _ReadSuite(
            dists=dists, verified=verified, release=release, date=date, indexes=tuple(indexes), notes=notes
        )

    def _fetch_index(
        self,
        dists: str,
        stem: str,
        listed: Mapping[str, Mapping[str, str]],
        by_hash: bool,
        *,
        component: str,
        arch: str,
    ) -> PackagesIndex | None:
        for suffix, decompress in ((".xz", lzma.decompress), (".gz", gzip.decompress), ("", bytes)):
            item = listed.get(stem + suffix)
            if item is None:
                continue
            sha256, size = item["sha256"], int(item["size"])
            url = f"{dists}/{stem}{suffix}"
            records = self.cache.get_records(sha256)
            if records is None:
                data = self.cache.get(sha256)
                if data is None:
                    data = self._download_checked(url, sha256, size, by_hash)
                    self.cache.put(sha256, data, what=redact(url))
                try:
                    records = parse_packages(decompress(data))
                except (lzma.LZMAError, OSError, EOFError, ValueError) as error:
                    raise SourceError(f"cannot read {redact(url)}: {error}") from None
                self.cache.put_records(sha256, records)
            return PackagesIndex(
                url=redact(url), component=component, architecture=arch, sha256=sha256, records=records
            )
        return None

    def _download_checked(self, url: str, sha256: str, size: int, by_hash: bool) -> bytes:
        # By-hash URLs name immutable files: a mirror updating between our InRelease and Packages
        # requests cannot hand us an index from another state. Plain paths are the fallback.
        urls = [f"{url.rsplit('/', 1)[0]}/by-hash/SHA256/{sha256}", url] if by_hash else [url]
        data = None
        for candidate in urls:
            data = self._get_optional(candidate)
            if data is not None:
                break
        if data is None:
            raise SourceError(f"cannot download {redact(url)}: not found")
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256 or len(data) != size:
            raise SourceError(
                f"{redact(url)}: sha256 {actual} ({len(data)} bytes), its Release says {sha256} "
                f"({size} bytes)",
                hint="the mirror is mid-sync or tampered with; try again later",
            )
        return data

    def _get(self, url: str) -> bytes:
        data = self._get_optional(url)
        if data is None:
            raise SourceError(
                f"cannot download {redact(url)}: not found", hint="check the suite name and the mirror"
            )
        return data

    def _locate(self, url: str) -> str | None:
        """The URL `url` ends at after redirects (None when not found); its body is not kept."""
        if url.startswith("file:"):
            return url if Path(urlsplit(url).path).is_file() else None
        try:
            response = self.http.get(url, timeout=TIMEOUT, stream=True)
        except requests.RequestException as error:
            raise SourceError(f"cannot reach {redact(url)}: {error.__class__.__name__}") from None
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise SourceError(f"cannot download {redact(url)}: HTTP {response.status_code}")
            return str(response.url)

    def _get_optional(self, url: str) -> bytes | None:
        if url.startswith("file:"):
            path = Path(urlsplit(url).path)
            return path.read_bytes() if path.is_file() else None
        try:
            response = self.http.get(url, timeout=TIMEOUT)
        except requests.RequestException as error:
            raise SourceError(f"cannot reach {redact(url)}: {error.__class__.__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SourceError(f"cannot download {redact(url)}: HTTP {response.status_code}")
        return response.content
