"""Release files of Debian archives: their signatures (checked with gpgv, as apt checks them), their
dates, and where an archive and its snapshots live. No downloads: archive.py fetches.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from debian.deb822 import Deb822, Release

from mlenv.errors import SourceError
from mlenv.model.debian import TRUSTED_KEYRING, TRUSTED_KEYRING_DIR, Keyring, SourceEntry

SNAPSHOT_ROOT = "https://snapshot.debian.org/archive"


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


# Each distribution's own components: a `deb` line with any other component is a vendor's repository,
# even when its URL ends in /debian or /ubuntu (Docker's: `.../linux/debian bookworm stable`).
DISTRIBUTION_COMPONENTS = {
    "Debian": frozenset({"main", "contrib", "non-free", "non-free-firmware"}),
    "Ubuntu": frozenset({"main", "restricted", "universe", "multiverse"}),
}


def is_distribution_archive(entry: SourceEntry) -> bool:
    """Is `entry` one of Debian's or Ubuntu's own archives? Only those move with the spec's apt mirror and
    have a snapshot service; a flat repository (NVIDIA's) or a vendor's with a component the distribution
    has not (Docker's `stable`) keeps its URI, as apt would fetch it."""
    if entry.suite.endswith("/"):
        return False
    found = distribution(entry.uri)
    components = set(entry.components)
    return found is not None and bool(components) and components <= DISTRIBUTION_COMPONENTS[found]


# The snapshot services, by the distribution an archive belongs to: each lays out every archive by
# time, ROOT/<archive>/<YYYYMMDDTHHMMSSZ>/dists/..., and answers a time with the import at or before it.
SNAPSHOT_ROOTS = {"Debian": SNAPSHOT_ROOT, "Ubuntu": "https://snapshot.ubuntu.com"}


def distribution(uri: str) -> str | None:
    """`Debian` for debian, debian-security, ...; `Ubuntu` for ubuntu, ubuntu-ports; None otherwise
    (the Release's Origin must then say the same)."""
    name = archive_name(uri)
    return "Debian" if name.startswith("debian") else "Ubuntu" if name.startswith("ubuntu") else None


def configured_snapshot_root() -> str | None:
    """$MLENV_SNAPSHOT_URL: one snapshot root for every archive (a local service), `off` (or empty) for
    none (an air-gapped site: "" is returned); None when unset (each distribution's own service)."""
    configured = os.environ.get("MLENV_SNAPSHOT_URL")
    if configured is None:
        return None
    configured = configured.strip().rstrip("/")
    return "" if configured in ("", "off", "none") else configured


def snapshot_root(uri: str, configured: str | None = None) -> str | None:
    """Where the snapshots of `uri`'s archive live: the configured root, else its distribution's."""
    if configured is not None:
        return configured or None
    found = distribution(uri)
    return SNAPSHOT_ROOTS[found] if found else None


def snapshot_timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def snapshot_url(uri: str, timestamp: str, root: str | None = None) -> str:
    base = root or snapshot_root(uri) or SNAPSHOT_ROOT
    return f"{base.rstrip('/')}/{archive_name(uri)}/{timestamp}/"


def timestamp_in(url: str) -> str | None:
    """The snapshot time a (redirected) snapshot URL names: the service answers a request for any time
    with the newest import at or before it."""
    found = re.search(r"/([0-9]{8}T[0-9]{6}Z)/", url)
    return found.group(1) if found else None


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


# --------------------------------------------------------------------------- dates


def release_date(release: Release, where: str) -> datetime:
    try:
        date = parsedate_to_datetime(release["Date"])
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{where}: the Release has no readable Date") from None
    return date if date.tzinfo else date.replace(tzinfo=UTC)


def note_expiry(release: Release, where: str, notes: list[str]) -> None:
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
