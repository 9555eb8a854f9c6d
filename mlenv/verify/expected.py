"""The ONE projection Lock -> expected EnvFacts: what an image built from the lock must contain."""

from __future__ import annotations

from mlenv.errors import ImageError
from mlenv.model.facts import AptFact, ArtifactFact, DistFact, EnvFacts, InterpreterFact
from mlenv.model.labels import LABEL_BASE_DIGEST, LABEL_LOCK
from mlenv.model.lock import BasePlatform, Lock
from mlenv.model.target import python_tuple

ARCH_NAMES = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


def venv_site(lock: Lock) -> str:
    major, minor = python_tuple(lock.target.python)
    return f"{lock.python.venv}/lib/python{major}.{minor}/site-packages"


def base_platform(lock: Lock, platform: str) -> BasePlatform:
    if lock.base is None:
        raise ImageError("the lock has no base image to verify against; add [base] to the spec and re-lock")
    for candidate in lock.base.platforms:
        if candidate.platform == platform:
            return candidate
    raise ImageError(f"the lock has no base for platform {platform}; it has "
                     f"{', '.join(p.platform for p in lock.base.platforms)}")


def expected_facts(lock: Lock, *, lock_digest: str, platform: str) -> EnvFacts:
    """What an image built from `lock` for `platform` must contain, as EnvFacts."""
    base = base_platform(lock, platform)
    apt = {(p.name, p.architecture): p for p in base.packages}
    for pin in lock.apt.packages:  # the closure replaces (upgrades) or adds to the base's packages
        for key in [k for k in apt if k[0] == pin.name and k[1] in (pin.architecture, "all")]:
            del apt[key]
        apt[(pin.name, pin.architecture)] = AptFact(name=pin.name, version=pin.version, architecture=pin.architecture)
    site = venv_site(lock)
    major, minor = python_tuple(lock.target.python)
    interpreters = (InterpreterFact(path=f"{lock.python.venv}/bin/python{major}.{minor}", version=lock.target.python),)
    labels = [(LABEL_LOCK, lock_digest)]
    assert lock.base is not None
    labels.append((LABEL_BASE_DIGEST, lock.base.digest))
    return EnvFacts(
        layer_diff_ids=base.diff_ids,
        os_id=base.os_id,
        os_version=base.os_version,
        architecture=ARCH_NAMES.get(platform, platform),
        glibc=base.glibc,
        interpreters=interpreters,
        apt=tuple(sorted(apt.values(), key=lambda a: (a.name, a.architecture))),
        python_dists=tuple(DistFact(name=p.name, version=p.version, site=site) for p in lock.python.packages),
        cuda=lock.cuda.components,
        artifacts=tuple(ArtifactFact(path=m.target, sha256=m.sha256) for m in lock.models if m.strategy == "bake"),
        labels=tuple(sorted(labels)),
    )
