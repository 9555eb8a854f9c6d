"""The dpkg database: /var/lib/dpkg/status, and status.d/* as distroless images keep it."""

from __future__ import annotations

from debian.deb822 import Deb822

from mlenv.model.facts import AptFact
from mlenv.observe.fs.rootfs import ImageFS, NotKeptError

STATUS = "/var/lib/dpkg/status"
STATUS_DIR = "/var/lib/dpkg/status.d"
INTEREST = (r"/var/lib/dpkg/status", r"/var/lib/dpkg/status\.d/[^/]+")
_FIELDS = ["Package", "Version", "Architecture", "Status"]
# Removed-but-not-purged packages stay in the database without files: not installed.
_ABSENT = {"not-installed", "config-files"}


def parse_status(data: bytes, *, require_status: bool = True) -> list[AptFact]:
    """Installed packages of a dpkg status file. distroless' status.d files omit Status: every
    paragraph there is an installed package, so `require_status` is False for them."""
    facts = []
    for paragraph in Deb822.iter_paragraphs(data.splitlines(keepends=True), fields=_FIELDS):
        name, version = paragraph.get("Package"), paragraph.get("Version")
        if not name or not version:
            continue
        status = paragraph.get("Status")
        if status is None:
            if require_status:
                continue
        elif status.split()[-1] in _ABSENT:
            continue
        facts.append(AptFact(name=name, version=version, architecture=paragraph.get("Architecture", "")))
    return facts


def read_dpkg(fs: ImageFS) -> tuple[AptFact, ...]:
    """Every installed package, sorted by (name, architecture); empty when there is no dpkg database."""
    facts: dict[tuple[str, str], AptFact] = {}
    sources: list[tuple[str, bool]] = []
    if fs.is_file(STATUS):
        sources.append((STATUS, True))
    if fs.is_dir(STATUS_DIR):
        sources.extend((f"{STATUS_DIR}/{name}", False) for name in fs.listdir(STATUS_DIR)
                       if not name.endswith(".md5sums"))
    for path, require_status in sources:
        try:
            data = fs.read_bytes(path)
        except (OSError, NotKeptError):
            continue
        for fact in parse_status(data, require_status=require_status):
            facts[(fact.name, fact.architecture)] = fact
    return tuple(sorted(facts.values(), key=lambda f: (f.name, f.architecture)))


def upstream_version(version: str) -> str:
    """'2.36-9+deb12u7' → '2.36', '1:2.3-1' → '2.3': the upstream part of a Debian version."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version
