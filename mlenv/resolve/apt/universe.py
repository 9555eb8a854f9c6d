"""The package universe: every version in the fetched indexes and in the base's dpkg status, looked up
by (name, architecture) the way apt's cache does."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from debian.debian_support import version_compare

from mlenv.model.debian import Record, Suite
from mlenv.resolve.apt.relations import Atom, Group, parse_relations
from mlenv.resolve.apt.state import AptBaseState

PkgKey = tuple[str, str]  # (name, architecture), arch:all counted as the native architecture like apt
# apt's Priority numbers: lower is more important, a missing field is 0.
PRIORITIES = {"required": 1, "important": 2, "standard": 3, "optional": 4, "extra": 5}


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
            self._relations[field_name] = parse_relations(self.record.get(field_name))
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
                for g in parse_relations(self.record.get("Provides"))
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
                        for group in parse_relations(provides):
                            for atom in group:
                                self._providers.setdefault(atom[0], set()).add(name)
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
