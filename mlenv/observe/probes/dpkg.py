"""The dpkg database: /var/lib/dpkg/status, and status.d/* as distroless images keep it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from debian.deb822 import Deb822

from mlenv.model.facts import AptFact
from mlenv.observe.fs.rootfs import ImageFS, NotKeptError
from mlenv.observe.limits import text_lines

STATUS = "/var/lib/dpkg/status"
STATUS_DIR = "/var/lib/dpkg/status.d"
INTEREST = (r"/var/lib/dpkg/status", r"/var/lib/dpkg/status\.d/[^/]+")
# What an AptFact needs; the apt resolver asks for the relation fields too.
FACT_FIELDS = ("Package", "Version", "Architecture")
# Removed-but-not-purged packages stay in the database without files: not installed.
_ABSENT = {"not-installed", "config-files"}


def installed_stanzas(
    data: bytes,
    *,
    fields: Iterable[str] = FACT_FIELDS,
    require_status: bool = True,
    what: str = STATUS,
) -> Iterator[dict[str, str]]:
    """The stanzas of a dpkg status file whose package is installed (or half-installed, unpacked...),
    each reduced to `fields` (with Package, Version and Status always kept).

    Status is "want flag state"; a stanza whose state is not-installed or config-files, or whose Status
    is not three words, is not an installed package. distroless' status.d files omit Status: every
    paragraph there is an installed package, so `require_status` is False for them."""
    wanted = list(dict.fromkeys(("Package", "Version", "Status", *fields)))
    # dpkg writes UTF-8; other bytes are replaced here, so the parser neither fails nor guesses an encoding.
    text = data.decode("utf-8", "replace")
    text_lines(text, what)  # a line past the limit is refused
    for paragraph in Deb822.iter_paragraphs(text.splitlines(keepends=True), fields=wanted):
        if not paragraph.get("Package") or not paragraph.get("Version"):
            continue
        status = paragraph.get("Status")
        if status is None:
            if require_status:
                continue
        else:
            words = status.split()
            if len(words) != 3 or words[2] in _ABSENT:
                continue
        yield {key: str(value) for key, value in paragraph.items()}


def parse_status(data: bytes, *, require_status: bool = True, what: str = STATUS) -> list[AptFact]:
    """Installed packages of a dpkg status file (see installed_stanzas)."""
    return [
        AptFact(name=s["Package"], version=s["Version"], architecture=s.get("Architecture", ""))
        for s in installed_stanzas(data, require_status=require_status, what=what)
    ]


def read_dpkg(fs: ImageFS) -> tuple[AptFact, ...]:
    """Every installed package, sorted by (name, architecture); empty when there is no dpkg database."""
    facts: dict[tuple[str, str], AptFact] = {}
    sources: list[tuple[str, bool]] = []
    if fs.is_file(STATUS):
        sources.append((STATUS, True))
    if fs.is_dir(STATUS_DIR):
        sources.extend(
            (f"{STATUS_DIR}/{name}", False)
            for name in fs.listdir(STATUS_DIR)
            if not name.endswith(".md5sums")
        )
    for path, require_status in sources:
        try:
            data = fs.read_bytes(path)
        except (OSError, NotKeptError):
            continue
        for fact in parse_status(data, require_status=require_status, what=path):
            facts[(fact.name, fact.architecture)] = fact
    return tuple(sorted(facts.values(), key=lambda f: (f.name, f.architecture)))


def upstream_version(version: str) -> str:
    """'2.36-9+deb12u7' → '2.36', '1:2.3-1' → '2.3': the upstream part of a Debian version."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version
