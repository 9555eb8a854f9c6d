"""What `apt-get install` is asked for: `name`, `name=version`, `name:arch`, `name:arch=version`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlenv.errors import ResolutionError
from mlenv.resolve.apt.solver import Solver
from mlenv.resolve.apt.universe import PkgKey, Universe

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


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


def request_key(request: AptRequest, universe: Universe, solver: Solver, notes: list[str]) -> PkgKey:
    """The package a request names, as apt picks it (a foreign-only name, a virtual one with one provider);
    a requested version becomes its candidate in `solver`."""
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
        solver.choose(key, match[0])
    elif solver.candidate(key) is None:
        raise ResolutionError(f"apt package {request.name} has no installation candidate")
    return key
