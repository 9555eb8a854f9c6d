"""apt's marking (MarkInstall) over a Universe: which versions `apt-get install` would install.

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

One thing apt does not do: a re-lock prefers the versions the old lock pinned (`prefer`), as uv and
pip-compile prefer the pins of their old output. A preferred version is the candidate while the mirror
still serves it and it is no downgrade of the base; when the marking then fails, the preferences some
package needs past (a versioned Depends the old version misses, a Breaks that hits it) are dropped and
the marking is done again, down to none: a re-lock moves only what it must.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from debian.debian_support import version_compare

from mlenv.resolve.apt.relations import Atom, Group, group_text, satisfies
from mlenv.resolve.apt.universe import PkgKey, Universe, Ver


@dataclass
class _Failure:
    group: Group | None
    detail: str
    tried: PkgKey | None = None


class Solver:
    """apt's MarkInstall, over a Universe. `install(keys)` marks like `apt-get install`."""

    def __init__(self, universe: Universe, *, prefer: Mapping[PkgKey, str] | None = None) -> None:
        self.u = universe
        # (name, arch) -> version the old lock pinned; an arch:all pin counts as the native one.
        self.prefer: dict[PkgKey, str] = {
            (name, universe.native if arch == "all" else arch): version
            for (name, arch), version in sorted((prefer or {}).items())
        }
        self.chosen: dict[PkgKey, Ver] = {}  # candidates a request named (`name=version`)
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
            self.cand[key] = self._preferred(key) or self.u.default_candidate(key)
        return self.cand[key]

    def choose(self, key: PkgKey, ver: Ver) -> None:
        """The candidate a request names (`name=version`): kept whatever the preferences do."""
        self.chosen[key] = ver
        self.cand[key] = ver

    def _preferred(self, key: PkgKey) -> Ver | None:
        """The old lock's version of `key` when the mirror (or the base) still has it, never a downgrade."""
        version = self.prefer.get(key)
        if version is None:
            return None
        current = self.current(key)
        if current is not None and version_compare(version, current.version) < 0:
            return None
        if current is not None and current.version == version:
            return current
        return next((v for v in self.u.versions(key) if v.version == version), None)

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
            return [ver] if ver is not None and satisfies(ver.version, relation, version) else []
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
            if ok and satisfies(ver.version, relation, version):
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
                    if ok and satisfies(prov_version, relation, version):
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
        """`apt-get install KEYS` (candidates already set): mark all, then auto-install each in order;
        with preferences, again without those that stood in the way, until it works or none is left."""
        while True:
            self._mark(keys)
            if not self.prefer or self.succeeded(keys):
                return
            for key in self._blocking_preferences() or set(self.prefer):
                del self.prefer[key]
            self.cand = dict(self.chosen)
            self.inst, self.protected, self.failures, self.removals = {}, set(), {}, []

    def succeeded(self, keys: Sequence[PkgKey]) -> bool:
        """Every request marked, nothing left broken, nothing of the base removed."""
        return not self.removals and not any(k in self.failures for k in keys) and not any(self.broken())

    def _blocking_preferences(self) -> set[PkgKey]:
        """Preferred keys that a version in play needs past: a versioned Depends or Pre-Depends the
        preferred version misses and the default candidate meets, or a Breaks/Conflicts that hits it and
        not the default; and preferred versions that could not be installed themselves."""
        in_play = {
            id(v): v
            for v in (*self.cand.values(), *self.inst.values(), *self.u.installed.values())
            if v is not None
        }
        needs: dict[str, list[tuple[Atom, bool]]] = {}
        for ver in in_play.values():
            for group in ver.critical():
                for atom in group:
                    if atom[2] is not None:
                        needs.setdefault(atom[0], []).append((atom, False))
            for atom in self.negatives(ver):
                if atom[2] is not None and not (atom[1] or "").startswith("@"):
                    needs.setdefault(atom[0], []).append((atom, True))
        blocking = set()
        for key in self.prefer:
            preferred, default = self._preferred(key), self.u.default_candidate(key)
            if preferred is None or preferred is default:
                continue
            if key in self.failures:
                blocking.add(key)
                continue
            for (_, _, relation, version), negative in needs.get(key[0], ()):
                hits_old = satisfies(preferred.version, relation, version)
                hits_new = default is not None and satisfies(default.version, relation, version)
                if (hits_old and not hits_new) if negative else (hits_new and not hits_old):
                    blocking.add(key)
                    break
        return blocking

    def _mark(self, keys: Sequence[PkgKey]) -> None:
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
                    yield ver, f"it depends on {group_text(group)}"
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
                parts.append(group_text(group))
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
