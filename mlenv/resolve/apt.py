"""apt layer of the lock: the exact closure `apt-get install --no-install-recommends` would install.

The closure is resolved against the base image's own state (its dpkg status, apt sources and
keyrings), so packages the base already has at a good version are left alone, and the ones it
has at a version too old for a new dependency are upgraded, as apt would.

The choice between alternatives follows apt's own marking algorithm (pkgDepCache::MarkInstall in
apt 2.6, the version in Debian 12), step for step where it decides the outcome:

* requested packages are marked first without their dependencies, then each is auto-installed in
  the order given; dependencies are visited depth first, Pre-Depends before Depends, in field order;
* an or-group already satisfied by what is installed or marked is left alone;
* otherwise the candidates of every alternative that satisfy it are tried in this order: those of
  already-installed packages (an upgrade) before new installs, alternatives in written order, and
  among the providers of one alternative apt's CompareProviders order (protected, installed,
  same name, Essential, Important, native architecture, Priority, then cache order);
* a candidate whose critical dependencies no candidate can satisfy is discarded (and not tried
  again), a failed install leaves the dependencies it already marked, as apt does;
* binaries built from the same source as a package being installed are upgraded with it
  (APT::Get::Upgrade-By-Source-Package), Conflicts/Breaks against installed packages upgrade them,
  and installed packages whose versioned dependency an upgrade would break are upgraded too.

Pure: the indexes and the base state come in as data (sources/debian.py fetches them).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from debian.deb822 import PkgRelation
from debian.debian_support import version_compare

from mlenv.errors import ResolutionError
from mlenv.model.lock import AptPin, AptSource, LockedApt
from mlenv.model.spec import AptSpec
from mlenv.observe.probes.dpkg import installed_stanzas
from mlenv.observe.probes.osrelease import LOCATIONS as OS_RELEASE_LOCATIONS
from mlenv.observe.probes.osrelease import parse_os_release
from mlenv.sources.debian.archive import (
    RECORD_FIELDS,
    DebianArchive,
    Keyring,
    Record,
    SourceEntry,
    Suite,
    archive_name,
    parse_deb822_sources,
    parse_sources_list,
)

ReadFile = Callable[[str], "bytes | None"]
ListDir = Callable[[str], Iterable[str]]

STATUS_FILE = "/var/lib/dpkg/status"
DPKG_ARCH_FILE = "/var/lib/dpkg/arch"
SOURCES_LIST = "/etc/apt/sources.list"
SOURCES_DIR = "/etc/apt/sources.list.d"
TRUSTED_KEYRING = "/etc/apt/trusted.gpg"
TRUSTED_DIR = "/etc/apt/trusted.gpg.d"
PREFERENCES = "/etc/apt/preferences"
PREFERENCES_DIR = "/etc/apt/preferences.d"

# apt's Priority numbers: lower is more important, a missing field is 0.
PRIORITIES = {"required": 1, "important": 2, "standard": 3, "optional": 4, "extra": 5}
# apt reads only files with these names in sources.list.d (others are ignored with a notice).
_SOURCES_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(list|sources)$")
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


# --------------------------------------------------------------------------- the base image's apt state


@dataclass(frozen=True, kw_only=True)
class AptBaseState:
    """What apt in the base image starts from: installed packages, sources, keyrings, architectures."""

    architecture: str
    foreign_architectures: tuple[str, ...] = ()
    installed: tuple[Record, ...] = ()  # dpkg status stanzas of installed (or half-installed) packages
    sources: tuple[SourceEntry, ...] = ()
    keyrings: tuple[Keyring, ...] = ()
    os_id: str | None = None
    os_codename: str | None = None
    notes: tuple[str, ...] = ()


def read_base_state(read: ReadFile, listdir: ListDir) -> AptBaseState:
    """The base's apt state from its files: `read(path)` gives bytes or None, `listdir(path)` names.

    Paths are absolute inside the image; symlinks are the caller's to follow (within the image).
    """
    status = read(STATUS_FILE)
    if status is None:
        raise ResolutionError(f"the base image has no {STATUS_FILE}: apt packages need a Debian-based base")
    installed = installed_records(status)
    architecture = native_architecture(installed)
    foreign = tuple(a for a in _lines(read(DPKG_ARCH_FILE)) if a != architecture)

    notes: list[str] = []
    sources: list[SourceEntry] = []
    text = read(SOURCES_LIST)
    if text is not None:
        sources += parse_sources_list(text.decode("utf-8", errors="replace"), origin=SOURCES_LIST)
    for name in sorted(_listdir(listdir, SOURCES_DIR)):
        path = f"{SOURCES_DIR}/{name}"
        if not _SOURCES_NAME.match(name):
            continue
        data = read(path)
        if data is None:
            continue
        decoded = data.decode("utf-8", errors="replace")
        if name.endswith(".list"):
            sources += parse_sources_list(decoded, origin=path)
        else:
            sources += parse_deb822_sources(decoded, origin=path)

    keyring_paths = [TRUSTED_KEYRING] + [f"{TRUSTED_DIR}/{n}" for n in sorted(_listdir(listdir, TRUSTED_DIR))]
    for entry in sources:
        keyring_paths += [s for s in entry.signed_by if s.startswith("/")]
    keyrings = []
    for path in dict.fromkeys(keyring_paths):
        data = read(path)
        if data is not None:
            keyrings.append(Keyring(path=path, data=data))

    if read(PREFERENCES) is not None or any(True for _ in _listdir(listdir, PREFERENCES_DIR)):
        notes.append(
            "the base has apt preferences (pinning); mlenv ignores them: every source has priority 500"
        )

    os_release = {}
    for path in OS_RELEASE_LOCATIONS:
        data = read(path)
        if data is not None:
            os_release = parse_os_release(data.decode("utf-8", errors="replace"))
            break
    return AptBaseState(
        architecture=architecture,
        foreign_architectures=foreign,
        installed=installed,
        sources=tuple(sources),
        keyrings=tuple(keyrings),
        os_id=os_release.get("ID"),
        os_codename=os_release.get("VERSION_CODENAME"),
        notes=tuple(notes),
    )


def is_base_state_path(path: str) -> bool:
    """Whether read_base_state may read `path`: for readers that keep only the files asked for."""
    return path in (STATUS_FILE, DPKG_ARCH_FILE, *OS_RELEASE_LOCATIONS) or path.startswith(
        ("/etc/apt/", "/usr/share/keyrings/")
    )


def installed_records(status: bytes) -> tuple[Record, ...]:
    """The installed packages of a dpkg status file, with the fields the resolver reads (and Status)."""
    return tuple(installed_stanzas(status, fields=RECORD_FIELDS))


def native_architecture(installed: Sequence[Record]) -> str:
    """dpkg's native architecture: the one dpkg itself is built for."""
    for record in installed:
        if record.get("Package") == "dpkg":
            return record["Architecture"]
    archs = sorted({r.get("Architecture", "all") for r in installed} - {"all"})
    if len(archs) == 1:
        return archs[0]
    raise ResolutionError("cannot tell the base image's architecture: dpkg is not installed in it")


def _lines(data: bytes | None) -> list[str]:
    return [] if data is None else [line.strip() for line in data.decode().splitlines() if line.strip()]


def _listdir(listdir: ListDir, path: str) -> list[str]:
    try:
        return list(listdir(path) or ())
    except OSError:
        return []


# --------------------------------------------------------------------------- the package universe


Atom = tuple[str, "str | None", "str | None", "str | None"]  # name, arch qualifier, relation, version
Group = tuple[Atom, ...]
PkgKey = tuple[str, str]  # (name, architecture), arch:all counted as the native architecture like apt


def _atoms(value: str | None) -> list[Group]:
    if not value:
        return []
    groups = []
    for alternatives in PkgRelation.parse_relations(value):
        group = []
        for atom in alternatives:
            relation: str | None = None
            version: str | None = None
            if atom["version"]:
                relation, version = atom["version"]
                # Policy 7.1: the deprecated `<` and `>` mean `<=` and `>=`.
                relation = {"<": "<=", ">": ">="}.get(relation, relation)
            group.append((atom["name"], atom["archqual"], relation, version))
        groups.append(tuple(group))
    return groups


def _satisfies(version: str | None, relation: str | None, wanted: str | None) -> bool:
    if relation is None:
        return True
    if version is None:  # an unversioned Provides never satisfies a versioned dependency
        return False
    cmp = version_compare(version, wanted)
    return {"<<": cmp < 0, "<=": cmp <= 0, "=": cmp == 0, ">=": cmp >= 0, ">>": cmp > 0}[relation]


def _atom_text(atom: Atom) -> str:
    name, qualifier, relation, version = atom
    text = name if qualifier is None else f"{name}:{qualifier.lstrip('@')}"
    return text if relation is None else f"{text} ({relation} {version})"


def _group_text(group: Group) -> str:
    return " | ".join(_atom_text(a) for a in group)


class Ver:
    """One version of one package (from an index, or only from the dpkg status)."""

    __slots__ = (
        "_provides",
        "_relations",
        "arch",
        "essential",
        "important",
        "key",
        "multi_arch",
        "name",
        "priority",
        "record",
        "source",
        "source_version",
        "suite",
        "version",
    )

    def __init__(self, record: Record, native: str, suite: int) -> None:
        self.record = record
        self.name = record["Package"]
        self.version = record["Version"]
        self.arch = record.get("Architecture", "all")
        self.key: PkgKey = (self.name, native if self.arch == "all" else self.arch)
        self.suite = suite  # index into the suites; -1 for a version known only from the dpkg status
        self.multi_arch = record.get("Multi-Arch", "no")
        self.essential = record.get("Essential", "no") == "yes"
        self.important = record.get("Important", record.get("Protected", "no")) == "yes"
        self.priority = PRIORITIES.get(record.get("Priority", ""), 0)
        source = record.get("Source", "").split()
        self.source = source[0] if source else self.name
        self.source_version = source[1].strip("()") if len(source) > 1 else self.version
        self._relations: dict[str, list[Group]] | None = None
        self._provides: list[tuple[str, str | None, str | None]] | None = None

    def relations(self, field_name: str) -> list[Group]:
        if self._relations is None:
            self._relations = {}
        if field_name not in self._relations:
            self._relations[field_name] = _atoms(self.record.get(field_name))
        return self._relations[field_name]

    def critical(self) -> list[Group]:
        return self.relations("Pre-Depends") + self.relations("Depends")

    def negative(self, archs: Sequence[str]) -> list[Atom]:
        """Conflicts and Breaks, plus apt's implicit ones between architectures of one package.

        A package that is not Multi-Arch: same cannot be installed for two architectures at once;
        one that is must have the same version on all of them. Implicit atoms carry the exact
        architecture as `@arch`.
        """
        atoms = [a for g in self.relations("Conflicts") + self.relations("Breaks") for a in g]
        for arch in archs:
            if arch == self.key[1]:
                continue
            if self.multi_arch == "same":
                atoms += [
                    (self.name, f"@{arch}", "<<", self.version),
                    (self.name, f"@{arch}", ">>", self.version),
                ]
            else:
                atoms.append((self.name, f"@{arch}", None, None))
        return atoms

    @property
    def provides(self) -> list[tuple[str, str | None, str | None]]:
        if self._provides is None:
            self._provides = [
                (n, q, v if r == "=" else None)
                for g in _atoms(self.record.get("Provides"))
                for (n, q, r, v) in g
            ]
        return self._provides

    def __repr__(self) -> str:
        return f"{self.name}:{self.arch}={self.version}"


def _newest_first(a: Ver, b: Ver) -> int:
    return version_compare(b.version, a.version)


class Universe:
    """Every version in the fetched indexes plus the installed ones, looked up lazily by name."""

    def __init__(self, suites: Sequence[Suite], base: AptBaseState) -> None:
        self.native = base.architecture
        self.archs = (base.architecture, *base.foreign_architectures)
        self.suites = tuple(suites)
        self._records: dict[str, list[tuple[Record, int]]] = {}
        self._versions: dict[PkgKey, list[Ver]] = {}
        self._providers: dict[str, set[str]] = {}
        self.order: dict[str, int] = {}  # apt's cache order, approximated by first appearance
        for number, suite in enumerate(self.suites):
            for index in suite.indexes:
                for record in index.records:
                    name = record["Package"]
                    self._records.setdefault(name, []).append((record, number))
                    self.order.setdefault(name, len(self.order))
                    provides = record.get("Provides")
                    if provides:
                        for group in PkgRelation.parse_relations(provides):
                            for atom in group:
                                self._providers.setdefault(atom["name"], set()).add(name)
        self.installed: dict[PkgKey, Ver] = {}
        self.held: set[PkgKey] = set()
        for record in base.installed:
            ver = Ver(record, self.native, -1)
            self.order.setdefault(ver.name, len(self.order))
            for provided in ver.provides:
                self._providers.setdefault(provided[0], set()).add(ver.name)
            # apt merges an installed version with the same version from an index into one.
            same = [v for v in self.versions(ver.key) if v.version == ver.version]
            self.installed[ver.key] = same[0] if same else ver
            if record.get("Status", "").split()[0] == "hold":
                self.held.add(ver.key)

    def versions(self, key: PkgKey) -> list[Ver]:
        """Versions of the package in the indexes, highest first (one per version, the first source's)."""
        cache = self._versions
        if key in cache:
            return cache[key]
        found: dict[str, Ver] = {}
        for record, suite in self._records.get(key[0], ()):
            arch = record.get("Architecture", "all")
            if (self.native if arch == "all" else arch) != key[1]:
                continue
            found.setdefault(record["Version"], Ver(record, self.native, suite))
        versions = sorted(found.values(), key=functools.cmp_to_key(_newest_first))
        cache[key] = versions
        return versions

    def known(self, name: str) -> bool:
        return name in self._records or any(k[0] == name for k in self.installed)

    def providers(self, name: str) -> list[str]:
        return sorted(self._providers.get(name, ()), key=lambda n: self.order.get(n, 0))

    def default_candidate(self, key: PkgKey) -> Ver | None:
        """apt's candidate with every source at priority 500: the highest version, never a downgrade.

        Versions from NotAutomatic suites (experimental, backports) are left out, as apt gives
        them priority 1 or 100, unless the installed version comes from one.
        """
        current = self.installed.get(key)
        for ver in self.versions(key):
            if ver.suite >= 0 and self.suites[ver.suite].not_automatic and ver is not current:
                continue
            if current is None or version_compare(ver.version, current.version) > 0:
                return ver
            break
        return current


# --------------------------------------------------------------------------- the solver


@dataclass
class _Failure:
    group: Group | None
    detail: str
    tried: PkgKey | None = None


class Solver:
    """apt's MarkInstall, over a Universe. `install(keys)` marks like `apt-get install`."""

    def __init__(self, universe: Universe) -> None:
        self.u = universe
        self.cand: dict[PkgKey, Ver | None] = {}
        self.inst: dict[PkgKey, Ver | None] = {}
        self.protected: set[PkgKey] = set()
        self.failures: dict[PkgKey, _Failure] = {}
        self.removals: list[tuple[PkgKey, str]] = []
        self._reverse: dict[str, list[PkgKey]] | None = None

    # ---- state

    def current(self, key: PkgKey) -> Ver | None:
        return self.u.installed.get(key)

    def candidate(self, key: PkgKey) -> Ver | None:
        if key not in self.cand:
            self.cand[key] = self.u.default_candidate(key)
        return self.cand[key]

    def install_ver(self, key: PkgKey) -> Ver | None:
        return self.inst[key] if key in self.inst else self.current(key)

    def marked(self, key: PkgKey) -> bool:
        return key in self.inst and self.inst[key] is not None and self.inst[key] is not self.current(key)

    def changes(self) -> list[Ver]:
        return [v for k, v in self.inst.items() if v is not None and v is not self.current(k)]

    # ---- dependency checks

    def _keys(self, name: str) -> list[PkgKey]:
        return [(name, arch) for arch in self.u.archs]

    def satisfiers(
        self, atom: Atom, owner: Ver, state: Callable[[PkgKey], Ver | None], negative: bool = False
    ) -> list[Ver]:
        """Versions in `state` that satisfy `atom` of `owner` (for a negative atom: that it hits)."""
        name, qualifier, relation, version = atom
        context = owner.key[1]
        found: list[Ver] = []
        if qualifier is not None and qualifier.startswith("@"):  # implicit, between architectures
            ver = state((name, qualifier[1:]))
            return [ver] if ver is not None and _satisfies(ver.version, relation, version) else []
        for key in self._keys(name):
            ver = state(key)
            if ver is None or (negative and ver.name == owner.name):
                continue
            if qualifier == "any":
                ok = ver.multi_arch == "allowed"
            elif qualifier is None:
                ok = negative or key[1] == context or ver.multi_arch == "foreign"
            else:
                ok = key[1] == (self.u.native if qualifier == "native" else qualifier)
            if ok and _satisfies(ver.version, relation, version):
                found.append(ver)
        for provider in self.u.providers(name):
            if negative and provider == owner.name:
                continue  # a package's own Provides never conflicts with it
            for key in self._keys(provider):
                ver = state(key)
                if ver is None or ver in found:
                    continue
                for prov_name, prov_qual, prov_version in ver.provides:
                    if prov_name != name:
                        continue
                    if qualifier == "any":
                        ok = prov_qual == "any" or (prov_qual is None and ver.multi_arch == "allowed")
                    elif qualifier is None:
                        ok = (
                            negative
                            or prov_qual == context
                            or (prov_qual is None and (key[1] == context or ver.multi_arch == "foreign"))
                        )
                    else:
                        arch = self.u.native if qualifier == "native" else qualifier
                        ok = prov_qual == arch or (prov_qual is None and key[1] == arch)
                    if ok and _satisfies(prov_version, relation, version):
                        found.append(ver)
                        break
        return found

    def negatives(self, ver: Ver) -> list[Atom]:
        return ver.negative(self.u.archs if len(self.u.archs) > 1 else ())

    def group_ok(self, group: Group, owner: Ver, state: Callable[[PkgKey], Ver | None]) -> bool:
        return any(self.satisfiers(atom, owner, state) for atom in group)

    def inst_broken(self, key: PkgKey) -> bool:
        ver = self.install_ver(key)
        if ver is None:
            return False
        if any(not self.group_ok(g, ver, self.install_ver) for g in ver.critical()):
            return True
        return any(self.satisfiers(a, ver, self.install_ver, negative=True) for a in self.negatives(ver))

    # ---- apt's CompareProviders and getAllPossibleSolutions

    def _installed_in_group(self, ver: Ver) -> bool:
        return any(self.current(k) is not None for k in self._keys(ver.name))

    def _essential(self, key: PkgKey) -> bool:
        return any(v is not None and v.essential for v in (self.current(key), self.candidate(key)))

    def _important(self, key: PkgKey) -> bool:
        return any(v is not None and v.important for v in (self.current(key), self.candidate(key)))

    def _compare_providers(self, target: str) -> Callable[[Ver, Ver], int]:
        def before(a: Ver, b: Ver) -> bool | None:
            ka, kb = a.key, b.key
            if (ka in self.protected) != (kb in self.protected):
                return ka in self.protected
            if a.multi_arch == "same" or b.multi_arch == "same":
                ia = a.multi_arch == "same" and self._installed_in_group(a)
                ib = b.multi_arch == "same" and self._installed_in_group(b)
                if ia != ib:
                    return ia
            ca, cb = self.current(ka) is not None, self.current(kb) is not None
            if ca != cb:
                return ca
            if a.name != b.name and (a.name == target) != (b.name == target):
                return a.name == target
            ea, eb = self._essential(ka), self._essential(kb)
            if ea != eb:
                return ea
            pa, pb = self._important(ka), self._important(kb)
            if pa != pb:
                return pa
            if ka[1] != kb[1]:
                for arch in self.u.archs:
                    if ka[1] == arch:
                        return True
                    if kb[1] == arch:
                        return False
            if a.priority != b.priority:
                return a.priority < b.priority
            # apt's last resort is the package ID, higher first: approximated by index order.
            oa, ob = self.u.order.get(a.name, 0), self.u.order.get(b.name, 0)
            if oa != ob:
                return oa > ob
            return None

        def compare(a: Ver, b: Ver) -> int:
            first = before(a, b)
            return 0 if first is None else (-1 if first else 1)

        return compare

    def solutions(self, group: Group, owner: Ver) -> list[Ver]:
        upgrades: list[Ver] = []
        new: list[Ver] = []
        for atom in group:
            versions = self.satisfiers(atom, owner, self.candidate)
            versions.sort(key=functools.cmp_to_key(self._compare_providers(atom[0])))
            for ver in versions:
                (upgrades if self.current(ver.key) is not None else new).append(ver)
        ordered = list(dict.fromkeys(upgrades + new))
        return [
            v
            for v in ordered
            if not (v.key in self.protected and not self.marked(v.key) and self.current(v.key) is None)
        ]

    # ---- marking

    def mark_keep(self, key: PkgKey, from_user: bool = False) -> bool:
        if not from_user and key in self.protected and self.marked(key):
            return False
        self.inst.pop(key, None)
        return True

    def _discard_candidate(self, key: PkgKey) -> None:
        self.cand[key] = self.install_ver(key)

    def _discard_install(self, key: PkgKey) -> None:
        self.inst.pop(key, None)
        self._discard_candidate(key)

    def _state_change(self, key: PkgKey) -> None:
        if key in self.protected and self.install_ver(key) is self.candidate(key):
            return
        self.inst[key] = self.candidate(key)

    def _mode_change_ok(self, key: PkgKey, from_user: bool, depth: int) -> bool:
        if depth > 3000:
            return False
        if from_user or self.marked(key):
            return True
        if key in self.protected:
            return False
        return key not in self.u.held

    def _install_ok(self, key: PkgKey, auto: bool, from_user: bool) -> bool:
        cand = self.candidate(key)
        current = self.current(key)
        if cand is None or cand is current:
            return True
        if not from_user and cand.multi_arch == "same" and not (self.marked(key) and self.inst[key] is cand):
            for other in self._keys(key[0]):
                if other == key or self.current(other) is None:
                    continue
                sibling = self.candidate(other)
                if sibling is not None and sibling.multi_arch == "same" and sibling.version != cand.version:
                    self.failures[key] = _Failure(None, f"it is not in sync with {other[0]}:{other[1]}")
                    return False
        if not auto:
            return True
        for group in cand.critical():
            if self.group_ok(group, cand, self.install_ver) or self.group_ok(group, cand, self.candidate):
                continue
            self.failures[key] = _Failure(group, self._no_candidate(group))
            if key not in self.protected:
                self.cand[key] = current
                self.inst.pop(key, None)
            return False
        return True

    def _no_candidate(self, group: Group) -> str:
        available = sorted(
            {v.version for atom in group for k in self._keys(atom[0]) for v in self.u.versions(k)},
            key=functools.cmp_to_key(version_compare),
        )
        if available:
            return f"which has no installable candidate (available: {', '.join(available)})"
        return "which has no installable candidate"

    def mark_install(
        self, key: PkgKey, *, auto: bool = True, from_user: bool = False, depth: int = 0
    ) -> bool:
        protected = key in self.protected
        cand = self.candidate(key)
        current = self.current(key)
        if not (protected and not self.marked(key) and cand is not None and cand is current):
            if not self._mode_change_ok(key, from_user, depth):
                if key in self.u.held:
                    self.failures[key] = _Failure(None, "which is held (dpkg --set-selections)")
                return False
        if cand is None:
            self.failures.setdefault(key, _Failure(None, "which has no installable candidate"))
            return False
        if not protected and not self.inst_broken(key):
            if cand is current:
                self.inst.pop(key, None)
                return True
            if self.marked(key):
                return True
        if not self._install_ok(key, auto, from_user):
            return False
        if from_user:
            self._state_change(key)
        fail_early = not protected and not from_user
        failed = False
        to_install: list[Group] = []
        to_upgrade: list[PkgKey] = []
        if auto:
            for group in cand.critical():
                if protected or not self.group_ok(group, cand, self.install_ver):
                    to_install.append(group)
            to_remove = [
                a for a in self.negatives(cand) if self.satisfiers(a, cand, self.install_ver, negative=True)
            ]
            if not self._remove_conflicts(cand, to_remove, to_upgrade, protected, from_user):
                if fail_early:
                    return False
                failed = True
            self._collect_reverse_depends(cand, to_upgrade)
        if not from_user:
            self._state_change(key)
        if not auto:
            return not failed
        # apt protects the package while its own dependencies are marked (ScopedProtected).
        self.protected.add(key)
        try:
            self._upgrade_other_binaries(key, cand, depth)
            for other in to_upgrade:
                if not self.marked(other) and not self.mark_install(other, depth=depth + 1):
                    self.removals.append((other, f"it cannot be upgraded for {self.label(key)}"))
            if not self._install_dependencies(key, cand, to_install, protected, from_user, depth):
                if fail_early:
                    self._discard_install(key)
                    return False
                failed = True
        finally:
            if not protected:
                self.protected.discard(key)
        return not failed

    def _remove_conflicts(
        self, owner: Ver, to_remove: list[Atom], to_upgrade: list[PkgKey], protected: bool, from_user: bool
    ) -> bool:
        failed = False
        bad: set[PkgKey] = set()
        for atom in to_remove:
            hits = self.satisfiers(atom, owner, self.candidate, negative=True)
            hits.sort(key=functools.cmp_to_key(self._compare_providers(atom[0])))
            for ver in hits:
                key = ver.key
                if self.current(key) is not ver:
                    if self.marked(key) and not self.mark_keep(key):
                        self.failures.setdefault(
                            owner.key,
                            _Failure(
                                None,
                                f"which {self._conflict_word(owner, atom)} {self.label(key)} {ver.version}",
                            ),
                        )
                        failed = True
                    elif protected:
                        self._discard_candidate(key)
                    else:
                        bad.add(key)
                else:
                    self.removals.append(
                        (key, f"{self.label(owner.key)} {self._conflict_word(owner, atom)} it")
                    )
            for ver in self.satisfiers(atom, owner, self.current, negative=True):
                key = ver.key
                cand = self.candidate(key)
                if cand is not self.current(key) and cand is not None and key not in bad:
                    to_upgrade.append(key)
                elif cand is not self.current(key):
                    self.removals.append(
                        (key, f"{self.label(owner.key)} {self._conflict_word(owner, atom)} it")
                    )
            if failed and not protected and not from_user:
                break
        return not failed

    def _conflict_word(self, owner: Ver, atom: Atom) -> str:
        return "breaks" if any(atom in g for g in owner.relations("Breaks")) else "conflicts with"

    def _reverse_depends(self) -> dict[str, list[PkgKey]]:
        if self._reverse is None:
            self._reverse = {}
            for key, ver in sorted(self.u.installed.items(), key=lambda kv: self.u.order.get(kv[0][0], 0)):
                for group in ver.critical():
                    for atom in group:
                        self._reverse.setdefault(atom[0], []).append(key)
        return self._reverse

    def _collect_reverse_depends(self, new: Ver, to_upgrade: list[PkgKey]) -> None:
        current = self.current(new.key)
        if current is None:
            return
        for key in dict.fromkeys(self._reverse_depends().get(new.name, ())):
            if self.marked(key) or key in to_upgrade:
                continue
            owner = self.u.installed[key]
            for group in owner.critical():
                for atom in group:
                    if atom[0] != new.name:
                        continue
                    if self._atom_hits(atom, owner, current) and not self._atom_hits(atom, owner, new):
                        if key not in to_upgrade:
                            to_upgrade.append(key)

    def _atom_hits(self, atom: Atom, owner: Ver, ver: Ver) -> bool:
        return ver in self.satisfiers(atom, owner, lambda k: ver if k == ver.key else None)

    def _upgrade_other_binaries(self, key: PkgKey, ver: Ver, depth: int) -> None:
        others = []
        for other, current in self.u.installed.items():
            if other == key:
                continue
            cand = self.candidate(other)
            if cand is None or cand is current or cand.source != ver.source:
                continue
            if cand.source_version != ver.source_version:
                continue
            if self.marked(other) and self.inst[other] is cand:
                continue
            others.append(other)
        others.sort(key=lambda k: self.u.order.get(k[0], 0))
        for other in others:
            self.mark_install(other, auto=False, depth=depth + 1)
        for other in others:
            self.mark_install(other, auto=True, depth=depth + 1)

    def _install_dependencies(
        self, key: PkgKey, owner: Ver, to_install: list[Group], protected: bool, from_user: bool, depth: int
    ) -> bool:
        failed = False
        for group in to_install:
            if self.group_ok(group, owner, self.install_ver):
                if not protected:
                    continue
                # apt spreads protection down dependencies that have exactly one solution.
                both = {
                    v
                    for atom in group
                    for state in (self.candidate, self.current)
                    for v in self.satisfiers(atom, owner, state)
                }
                if len(both) != 1:
                    continue
                only = next(iter(both)).key
                if only in self.protected:
                    continue
                self.protected.add(only)
                if not self.mark_install(only, depth=depth + 1):
                    self.failures.setdefault(key, _Failure(group, "", only))
                    failed = True
                continue
            found = False
            options = self.solutions(group, owner)
            for ver in options:
                target = ver.key
                if self.candidate(target) is not ver:
                    continue
                if protected and len(options) == 1:
                    if not self.mark_install(target, auto=False, depth=depth + 1):
                        continue
                    self.protected.add(target)
                if not self.mark_install(target, depth=depth + 1):
                    continue
                found = True
                break
            if not found:
                tried = options[0].key if options else None
                detail = "" if options else self._no_candidate(group)
                self.failures[key] = _Failure(group, detail, tried)
                failed = True
                if not protected and not from_user:
                    break
        return not failed

    # ---- the command

    def install(self, keys: Sequence[PkgKey]) -> None:
        """`apt-get install KEYS` (candidates already set): mark all, then auto-install each in order."""
        for key in keys:
            self.protected.add(key)
            self.mark_install(key, auto=False, from_user=True)
        for key in keys:
            self.mark_install(key, auto=True, from_user=True)
        self._fix_installed()

    def _fix_installed(self) -> None:
        # What apt's problem resolver does in the simple case: an installed package that the new
        # state breaks (its Breaks/Conflicts now hit, or a versioned dependency no longer holds) is
        # upgraded when its candidate is fine again.
        for _ in range(3):
            changed = False
            for key, ver in sorted(self.u.installed.items(), key=lambda kv: self.u.order.get(kv[0][0], 0)):
                if self.marked(key):
                    continue
                if not self._newly_broken(ver):
                    continue
                cand = self.candidate(key)
                if cand is not None and cand is not ver and self.mark_install(key):
                    changed = True
            if not changed:
                return

    def _newly_broken(self, ver: Ver) -> bool:
        for atom in self.negatives(ver):
            if self.satisfiers(atom, ver, self.install_ver, negative=True) and not self.satisfiers(
                atom, ver, self.current, negative=True
            ):
                return True
        for group in ver.critical():
            if self.group_ok(group, ver, self.current) and not self.group_ok(group, ver, self.install_ver):
                return True
        return False

    # ---- explaining failures

    def label(self, key: PkgKey) -> str:
        return key[0] if key[1] == self.u.native else f"{key[0]}:{key[1]}"

    def _conflicts(self, ver: Ver) -> list[str]:
        found = []
        for atom in self.negatives(ver):
            for hit in self.satisfiers(atom, ver, self.install_ver, negative=True):
                where = "installed" if self.current(hit.key) is hit else "to be installed"
                found.append(
                    f"{self._conflict_word(ver, atom)} {self.label(hit.key)} {hit.version} ({where})"
                )
        return found

    def broken(self) -> Iterator[tuple[Ver, str]]:
        """Packages the final state leaves broken, and why."""
        for ver in self.changes():
            for group in ver.critical():
                if not self.group_ok(group, ver, self.install_ver):
                    yield ver, f"it depends on {_group_text(group)}"
            for text in self._conflicts(ver):
                yield ver, f"it {text}"
        for key, ver in self.u.installed.items():
            if not self.marked(key) and self._newly_broken(ver):
                yield ver, "the new packages break it"

    def explain(self, key: PkgKey) -> str:
        """`foo -> libbar (>= 2) -> libbaz, which has no installable candidate`."""
        parts = [self.label(key)]
        seen = {key}
        current = key
        while True:
            failure = self.failures.get(current)
            ver = self.install_ver(current) or self.candidate(current)
            if ver is None:
                group, detail, following = None, "which has no installable candidate", None
            elif failure is not None:
                group, detail, following = failure.group, failure.detail, failure.tried
            else:
                unmet = [g for g in ver.critical() if not self.group_ok(g, ver, self.install_ver)]
                if unmet:
                    group, following = unmet[0], self._first_option(unmet[0], ver)
                    detail = "" if following is not None else self._no_candidate(unmet[0])
                else:
                    conflicts = self._conflicts(ver)
                    group, following = None, None
                    detail = f"which {conflicts[0]}" if conflicts else "which cannot be installed"
            if group is not None:
                parts.append(_group_text(group))
            if following is None or following in seen:
                detail = detail or "which cannot be installed"
                break
            if group is None or following[0] != group[0][0]:
                parts.append(self.label(following))
            seen.add(following)
            current = following
        return f"{' -> '.join(parts)}, {detail}"

    def _first_option(self, group: Group, owner: Ver) -> PkgKey | None:
        options = self.solutions(group, owner)
        return options[0].key if options else None


# --------------------------------------------------------------------------- requests and results


@dataclass(frozen=True, kw_only=True)
class AptRequest:
    name: str
    architecture: str | None = None
    version: str | None = None
    text: str = ""


def parse_request(text: str) -> AptRequest:
    """`name`, `name=version`, `name:arch`, `name:arch=version`."""
    spec, _, version = text.strip().partition("=")
    name, _, arch = spec.partition(":")
    if "/" in spec:
        raise ResolutionError(
            f"apt package {text!r}: `name/release` is not supported", hint="pin a version with name=version"
        )
    if (
        not _PACKAGE_NAME.match(name)
        or (arch and not re.fullmatch(r"[a-z0-9-]+", arch))
        or ("=" in text and not version)
    ):
        raise ResolutionError(f"apt package {text!r} is not `name`, `name=version` or `name:arch`")
    return AptRequest(name=name, architecture=arch or None, version=version or None, text=text.strip())


@dataclass(frozen=True, kw_only=True)
class AptResolution:
    pins: tuple[AptPin, ...]
    sources: tuple[AptSource, ...]
    notes: tuple[str, ...] = ()

    def locked(self) -> LockedApt:
        return LockedApt(sources=self.sources, packages=self.pins)


def resolve_apt(requests: Sequence[str], base: AptBaseState, suites: Sequence[Suite]) -> AptResolution:
    """The closure `apt-get install --no-install-recommends REQUESTS` installs on `base` from `suites`."""
    notes = list(base.notes)
    for suite in suites:
        notes += suite.notes
    universe = Universe(suites, base)
    solver = Solver(universe)
    keys: list[PkgKey] = []
    for text in requests:
        request = parse_request(text)
        key = _request_key(request, universe, solver, notes)
        if key not in keys:
            keys.append(key)
    solver.install(keys)

    broken = list(solver.broken())
    failing = [k for k in keys if k in solver.failures or any(v.key == k for v, _ in broken)]
    removal = ""
    if solver.removals:
        removed, why = solver.removals[0]
        removal = f"; apt would remove {solver.label(removed)} from the base ({why})"
    if failing:
        raise ResolutionError(
            f"cannot install {solver.label(failing[0])}: {solver.explain(failing[0])}{removal}"
        )
    wanted = ", ".join(solver.label(k) for k in keys)
    if broken:
        ver, why = broken[0]
        raise ResolutionError(
            f"cannot install {wanted}: {solver.label(ver.key)} {ver.version}: {why}{removal}"
        )
    if solver.removals:
        raise ResolutionError(
            f"cannot install {wanted} without changing the base{removal}",
            hint="mlenv locks installs and upgrades only",
        )

    pins = []
    for ver in solver.changes():
        record = ver.record
        if ver.suite < 0 or "Filename" not in record:
            raise ResolutionError(f"{ver.name} {ver.version} is to be installed but no index has its .deb")
        if "SHA256" not in record or "Size" not in record:
            raise ResolutionError(
                f"{ver.name} {ver.version}: its index lists no SHA256 and Size; it cannot be locked"
            )
        pins.append(
            AptPin(
                name=ver.name,
                version=ver.version,
                architecture=ver.arch,
                filename=record["Filename"],
                size=int(record["Size"]),
                sha256=record["SHA256"],
                requested=ver.key in keys,
            )
        )
    pins.sort(key=lambda p: (p.name, p.architecture))
    for key in keys:
        if not solver.marked(key):
            current = universe.installed.get(key)
            notes.append(
                f"{key[0]} is already the newest version in the base ({current.version if current else '?'})"
            )
    sources = tuple(sorted((s.source for s in suites), key=lambda s: (s.mirror, s.suite)))
    return AptResolution(pins=tuple(pins), sources=sources, notes=tuple(dict.fromkeys(notes)))


def _request_key(request: AptRequest, universe: Universe, solver: Solver, notes: list[str]) -> PkgKey:
    arch = request.architecture
    if arch is not None and arch not in (*universe.archs, "all", "any", "native"):
        raise ResolutionError(
            f"apt package {request.text}: architecture {arch} is not configured in the base",
            hint="the base's dpkg needs `dpkg --add-architecture`",
        )
    arch = universe.native if arch in (None, "all", "any", "native") else arch
    key = (request.name, arch)
    versions = universe.versions(key)
    if request.architecture is None and not versions and key not in universe.installed:
        # Like apt, a name that exists only for a foreign architecture means that one (wine32 -> :i386).
        for foreign in universe.archs[1:]:
            if universe.versions((request.name, foreign)):
                key, versions = (request.name, foreign), universe.versions((request.name, foreign))
                break
    if not versions and key not in universe.installed:
        providers = []
        for provider in universe.providers(request.name):
            candidate = solver.candidate((provider, arch))
            if candidate is not None and any(n == request.name for n, _, _ in candidate.provides):
                providers.append(provider)
        if request.version is None and len(providers) == 1:
            notes.append(f"selecting {providers[0]} for the virtual package {request.name}")
            return (providers[0], arch)
        if providers:
            raise ResolutionError(
                f"apt package {request.name} is virtual, provided by {', '.join(providers)}",
                hint="request one of them",
            )
        raise ResolutionError(
            f"unknown apt package {request.name}"
            + ("" if universe.known(request.name) else " (in none of the base's sources)")
        )
    if request.version is not None:
        match = [v for v in versions if v.version == request.version]
        current = universe.installed.get(key)
        if not match and current is not None and current.version == request.version:
            match = [current]
        if not match:
            available = ", ".join(v.version for v in versions) or "none"
            raise ResolutionError(
                f"apt package {request.name}={request.version} is not available (available: {available})"
            )
        solver.cand[key] = match[0]
    elif solver.candidate(key) is None:
        raise ResolutionError(f"apt package {request.name} has no installation candidate")
    return key


# --------------------------------------------------------------------------- fetching + resolving


def fetch_suites(
    base: AptBaseState, archive: DebianArchive, *, as_of: datetime | None = None
) -> tuple[Suite, ...]:
    """Every suite the base's sources list, fetched and checked (network, through `archive`)."""
    merged: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], SourceEntry] = {}
    for entry in base.sources:
        key = (entry.uri, entry.suite, entry.architectures, entry.signed_by)
        if key in merged:
            previous = merged[key]
            components = tuple(dict.fromkeys(previous.components + entry.components))
            merged[key] = SourceEntry(
                uri=previous.uri,
                suite=previous.suite,
                components=components,
                architectures=previous.architectures,
                signed_by=previous.signed_by,
                origin=previous.origin,
            )
        else:
            merged[key] = entry
    if not merged:
        raise ResolutionError("the base image lists no apt sources (/etc/apt/sources.list, sources.list.d)")
    archives = {archive_name(e.uri) for e in merged.values()}
    configured = (base.architecture, *base.foreign_architectures)
    suites = []
    for entry in merged.values():
        archs = [a for a in configured if not entry.architectures or a in entry.architectures]
        if not archs:
            continue
        suites.append(
            archive.fetch_suite(
                entry, architectures=archs, keyrings=base.keyrings, archives=archives, as_of=as_of
            )
        )
    return tuple(suites)


def lock_apt(
    spec: AptSpec, base: AptBaseState, *, as_of: datetime | None = None, archive: DebianArchive | None = None
) -> AptResolution:
    """The apt section of the lock: fetch the base's indexes (through `spec.mirror` if set) and resolve."""
    if not spec.packages:
        return AptResolution(pins=(), sources=())
    archive = archive or DebianArchive(mirror=spec.mirror)
    suites = fetch_suites(base, archive, as_of=as_of)
    return resolve_apt(spec.packages, base, suites)
