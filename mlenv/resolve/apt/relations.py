"""Relation fields of Debian packages (Depends, Pre-Depends, Conflicts, Breaks, Provides): parsed into
atoms, evaluated against versions, and written back for messages."""

from __future__ import annotations

from debian.deb822 import PkgRelation
from debian.debian_support import version_compare

# name, architecture qualifier (":any", ":native", ":i386"; "@arch" for apt's implicit ones), relation,
# version.
Atom = tuple[str, "str | None", "str | None", "str | None"]
Group = tuple[Atom, ...]  # alternatives: `a | b (>= 2)`


def parse_relations(value: str | None) -> list[Group]:
    """A relation field (Depends, Breaks, Provides...) as and-ed groups of or-ed atoms."""
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


def satisfies(version: str | None, relation: str | None, wanted: str | None) -> bool:
    """Whether `version` meets `relation wanted` (no relation: any version, even none)."""
    if relation is None:
        return True
    if version is None:  # an unversioned Provides never satisfies a versioned dependency
        return False
    cmp = version_compare(version, wanted)
    return {"<<": cmp < 0, "<=": cmp <= 0, "=": cmp == 0, ">=": cmp >= 0, ">>": cmp > 0}[relation]


def atom_text(atom: Atom) -> str:
    name, qualifier, relation, version = atom
    text = name if qualifier is None else f"{name}:{qualifier.lstrip('@')}"
    return text if relation is None else f"{text} ({relation} {version})"


def group_text(group: Group) -> str:
    return " | ".join(atom_text(a) for a in group)
