"""Debian archives: apt source entries, signed Release files and Packages indexes.

The only apt code that touches the network. Everything fetched is checked before use: the Release
file's signature with `gpgv` against the keyrings found in the base image (as apt would), every
Packages index against the sha256 that Release lists. Indexes are cached by that sha256, so a
re-lock against an unchanged mirror downloads only the small InRelease files.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
from debian.deb822 import Deb822, Packages, PkgRelation, Release

from mlenv.errors import SourceError
from mlenv.files import write_atomic
from mlenv.model.lock import AptSource
from mlenv.model.urls import redact
from mlenv.sources.cas import ContentStore, cache_root

TIMEOUT = (15, 120)
SNAPSHOT_ROOT = "https://snapshot.debian.org/archive"
TRUSTED_KEYRING = "/etc/apt/trusted.gpg"
TRUSTED_KEYRING_DIR = "/etc/apt/trusted.gpg.d"

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
# Bumped whenever the parsed form written to the cache changes shape.
PARSED_FORMAT = 1

Record = Mapping[str, str]


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
    but_automatic_upgrades: bool
    indexes: tuple[PackagesIndex, ...]
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- sources.list


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
        # Flat repositories have no dists/ tree; nothing in the Debian images we target uses them.
        raise SourceError(f"{origin}: flat repository {uri} {suite} is not supported")
    if not components:
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


# --------------------------------------------------------------------------- mirrors and snapshots


def archive_name(uri: str) -> str:
    """`http://deb.debian.org/debian-security` -> `debian-security` (the last path segment)."""
    return urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]


def apply_mirror(uri: str, mirror: str | None, archives: Iterable[str]) -> str:
    """The URI to fetch from when a mirror replaces the image's URI.

    A mirror names either an archive (`http://m/debian`, its last segment is one of the image's
    archive names) or the directory holding archives (`http://m/`). Either way every archive keeps its
    name under the mirror, so `debian` and `debian-security` both move with one setting.
    """
    if not mirror:
        return uri
    mirror = mirror.rstrip("/")
    parts = urlsplit(mirror)
    parent, _, last = parts.path.rpartition("/")
    if last and last in set(archives):
        mirror = mirror[: len(mirror) - len(last) - 1]
    return f"{mirror}/{archive_name(uri)}"


def snapshot_timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def snapshot_url(uri: str, timestamp: str) -> str:
    return f"{SNAPSHOT_ROOT}/{archive_name(uri)}/{timestamp}/"


# --------------------------------------------------------------------------- signatures


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets from an ASCII-armored key (gpgv reads only binary keyrings)."""
    if b"-----BEGIN PGP" not in data:
        return data
    lines = data.decode("ascii", errors="replace").splitlines()
    body: list[str] = []
    inside = headers = False
    for line in lines:
        if line.startswith("-----BEGIN PGP"):
            inside, headers = True, True
            continue
        if line.startswith("-----END PGP"):
            inside = False
            continue
        if not inside:
            continue
        if headers:
            # Armor headers ("Comment: ...") end at the first empty line.
            if not line.strip():
                headers = False
            elif ":" not in line:
                headers = False
                body.append(line.strip())
            continue
        if line.startswith("="):  # the CRC24 line
            continue
        body.append(line.strip())
    return base64.b64decode("".join(body))


@dataclass(frozen=True, kw_only=True)
class Verified:
    content: bytes
    keyring: str | None  # None: not verified (say why in note)
    note: str | None = None


def _is_fingerprint(value: str) -> bool:
    return re.fullmatch(r"[0-9A-Fa-f]{16,40}!?", value) is not None


def keyrings_for(
    entry: SourceEntry, keyrings: Sequence[Keyring]
) -> tuple[tuple[Keyring, ...], tuple[str, ...], tuple[str, ...]]:
    """(keyrings to try, fingerprints the signer must have, keyring paths named but absent), like apt.

    Signed-By names the only keyrings (or keys) trusted for this source; without it apt trusts
    /etc/apt/trusted.gpg and /etc/apt/trusted.gpg.d/*.{gpg,asc}.
    """
    by_path = {k.path: k for k in keyrings}
    trusted = tuple(
        k
        for k in sorted(keyrings, key=lambda k: k.path)
        if k.path == TRUSTED_KEYRING
        or (k.path.startswith(TRUSTED_KEYRING_DIR + "/") and k.path.endswith((".gpg", ".asc")))
    )
    chosen: list[Keyring] = []
    fingerprints: list[str] = []
    missing: list[str] = []
    for signer in entry.signed_by:
        if "BEGIN PGP" in signer:
            chosen.append(Keyring(path=f"{entry.origin} (inline Signed-By key)", data=signer.encode()))
        elif _is_fingerprint(signer):
            fingerprints.append(signer.rstrip("!").upper())
        elif signer in by_path:
            chosen.append(by_path[signer])
        else:
            missing.append(signer)
    if not entry.signed_by or (fingerprints and not chosen):
        chosen.extend(trusted)
    return tuple(chosen), tuple(fingerprints), tuple(missing)


def verify_release(
    signed: bytes,
    detached: bytes | None,
    *,
    entry: SourceEntry,
    keyrings: Sequence[Keyring],
    gpgv: str | None,
) -> Verified:
    """The Release text as signed and the keyring that verified it (unverified and noted if it cannot be)."""
    unsigned = _strip_clearsign(signed) if detached is None else signed
    where = f"{entry.uri} {entry.suite}"
    if gpgv is None:
        return Verified(
            content=unsigned,
            keyring=None,
            note=f"gpgv not found: the Release of {where} is NOT verified (install gpgv)",
        )
    candidates, fingerprints, missing = keyrings_for(entry, keyrings)
    if not candidates:
        named = f" (Signed-By {', '.join(missing)} is not in the image)" if missing else ""
        return Verified(
            content=unsigned,
            keyring=None,
            note=f"no apt keyring in the base image for {where}{named}: its Release is NOT verified",
        )
    with tempfile.TemporaryDirectory(prefix="mlenv-gpgv-") as tmp:
        work = Path(tmp)
        data_path = work / ("Release" if detached is not None else "InRelease")
        data_path.write_bytes(signed)
        sig_args: list[str] = []
        if detached is not None:
            (work / "Release.gpg").write_bytes(detached)
            sig_args = [str(work / "Release.gpg"), str(data_path)]
        for number, keyring in enumerate(candidates):
            key_path = work / f"keyring-{number}.gpg"
            try:
                key_path.write_bytes(dearmor(keyring.data))
            except (ValueError, UnicodeError):
                continue  # an unreadable keyring verifies nothing; apt skips it too
            out = work / f"out-{number}"
            args = [gpgv, "--homedir", str(work), "--status-fd", "1", "--keyring", str(key_path)]
            args += sig_args if detached is not None else ["--output", str(out), str(data_path)]
            result = subprocess.run(args, capture_output=True, check=False)
            signers = _valid_signers(result.stdout.decode(errors="replace"))
            if fingerprints:
                signers = {s for s in signers if any(s.endswith(f) for f in fingerprints)}
            if signers:
                content = signed if detached is not None else out.read_bytes()
                return Verified(content=content, keyring=keyring.path)
    tried = ", ".join(k.path for k in candidates)
    raise SourceError(
        f"the Release of {where} is not signed by a key in {tried}",
        hint="the mirror may be serving a different archive, or the image's keyring is outdated",
    )


def _valid_signers(status: str) -> set[str]:
    # apt's rule: a signature counts when gpgv reports it both GOODSIG and VALIDSIG; expired or revoked
    # keys (EXPKEYSIG, REVKEYSIG) and missing keys (NO_PUBKEY) do not.
    good = False
    signers = set()
    for line in status.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "[GNUPG:]":
            continue
        if words[1] == "GOODSIG":
            good = True
        elif words[1] == "VALIDSIG" and good:
            signers.add(words[-1].upper())  # the primary key's fingerprint
            signers.add(words[2].upper())  # the signing (sub)key's
    return signers


def _strip_clearsign(signed: bytes) -> bytes:
    _, payload, _ = Deb822.split_gpg_and_payload(iter(signed.splitlines()))
    return b"\n".join(payload) + b"\n"


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


# --------------------------------------------------------------------------- fetching


class DebianArchive:
    """Fetches and checks the Release and Packages indexes of apt sources.

    `mirror` replaces each source's URI (see apply_mirror); `gpgv` names the verifier (looked up on
    PATH); None does not verify, which every fetched suite then notes.
    """

    def __init__(
        self,
        *,
        mirror: str | None = None,
        cache: IndexCache | None = None,
        session: requests.Session | None = None,
        gpgv: str | None = "gpgv",
    ) -> None:
        self.mirror = mirror
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
        archives: Iterable[str] = (),
        as_of: datetime | None = None,
    ) -> Suite:
        archives = set(archives) | {archive_name(entry.uri)}
        base_uri = apply_mirror(entry.uri, self.mirror, archives)
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
        if entry.suite not in names:
            raise SourceError(
                f"{dists}: the Release is for {release.get('Codename') or release.get('Suite')!r}, "
                f"not {entry.suite!r}",
                hint="the mirror serves a different distribution",
            )
        date = _release_date(release, dists)
        _note_expiry(release, dists, notes)

        listed = {item["name"]: item for item in release.get("SHA256", [])}
        by_hash = release.get("Acquire-By-Hash", "no").strip().lower() == "yes"
        archs = list(dict.fromkeys(architectures))
        release_archs = release.get("Architectures", "").split()
        if "all" in release_archs and release.get("No-Support-for-Architecture-all", "") != "Packages":
            archs.append("all")  # arch:all packages live only in binary-all here
        indexes = []
        for component in entry.components:
            for arch in archs:
                index = self._fetch_index(dists, component, arch, listed, by_hash)
                if index is None:
                    if arch != "all":
                        notes.append(f"{dists} lists no Packages index for {component}/binary-{arch}")
                    continue
                indexes.append(index)
        if not indexes:
            raise SourceError(
                f"{dists}: no Packages index for {', '.join(entry.components)} on {', '.join(archs)}"
            )

        timestamp = None
        snapshot = None
        if release.get("Origin", "") == "Debian":
            if as_of is not None and as_of < date:
                notes.append(
                    f"{dists} is dated {date.isoformat()}, after as-of {as_of.isoformat()}: "
                    "the pins reflect the mirror, not the as-of time"
                )
            timestamp = snapshot_timestamp(as_of or date)
            snapshot = snapshot_url(entry.uri, timestamp)
        source = AptSource(
            mirror=redact(base_uri),
            suite=entry.suite,
            components=entry.components,
            snapshot=snapshot,
            snapshot_timestamp=timestamp,
            signed_by=verified.keyring,
        )
        return Suite(
            entry=entry,
            source=source,
            date=date,
            not_automatic=release.get("NotAutomatic", "").strip().lower() == "yes",
            but_automatic_upgrades=release.get("ButAutomaticUpgrades", "").strip().lower() == "yes",
            indexes=tuple(indexes),
            notes=tuple(notes),
        )

    def _fetch_index(
        self, dists: str, component: str, arch: str, listed: Mapping[str, Mapping[str, str]], by_hash: bool
    ) -> PackagesIndex | None:
        stem = f"{component}/binary-{arch}/Packages"
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


def _release_date(release: Release, where: str) -> datetime:
    try:
        date = parsedate_to_datetime(release["Date"])
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{where}: the Release has no readable Date") from None
    return date if date.tzinfo else date.replace(tzinfo=UTC)


def _note_expiry(release: Release, where: str, notes: list[str]) -> None:
    # apt refuses an expired Release; the lock stays deterministic (no wall clock in it), so this is
    # only said, not enforced.
    try:
        until = parsedate_to_datetime(release["Valid-Until"])
    except (KeyError, TypeError, ValueError):
        return
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    if until < datetime.now(UTC):
        notes.append(f"{where}: the Release expired on {until.isoformat()} (apt would refuse it)")


def relation_names(value: str) -> list[str]:
    """The package names a relation field mentions, in order (for Provides indexes)."""
    return [atom["name"] for group in PkgRelation.parse_relations(value) for atom in group]
