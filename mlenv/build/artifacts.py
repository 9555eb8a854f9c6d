"""Every locked artifact (wheels, .debs) fetched on the host and checked against the lock's sha256.

Fetched by hash, from the first place that has it: the content-addressed cache, then each URL (for a
.deb the mirror's pool path, then the snapshot archive's), then the vault. Whatever the source, the
bytes are checked against the lock's sha256 before they are used (ContentStore.put_stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlenv.errors import BuildError
from mlenv.model.debian import deb_urls
from mlenv.model.lock import Lock
from mlenv.model.target import target_tags, wheel_installs
from mlenv.sources.cas import ContentStore

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class Artifact:
    filename: str
    sha256: str
    urls: tuple[str, ...]  # tried in order; the hash decides, not the URL
    package: str = ""  # the pin it belongs to, named when every place fails
    version: str = ""


def python_artifacts(lock: Lock, platform: str) -> list[Artifact]:
    """The wheels of every pin that install on `platform` (one platform is built at a time)."""
    tags = target_tags(lock.target, platform)
    artifacts = []
    for pin in sorted(lock.python.packages, key=lambda p: p.name):
        wheels = [w for w in pin.wheels if wheel_installs(w.name, tags)]
        if not wheels:
            raise BuildError(
                f"{pin.name}=={pin.version} has no wheel for {platform} in the lock",
                hint="a hermetic build installs wheels only: run `mlenv lock`, which builds an sdist-only "
                "pin into a wheel on the host",
            )
        # A wheel built on the host at lock is at no URL: the content store (or the vault) holds it.
        artifacts += [
            Artifact(
                filename=w.name,
                sha256=w.sha256,
                urls=(w.url,) if w.url else (),
                package=pin.name,
                version=pin.version,
            )
            for w in wheels
        ]
    return artifacts


def apt_artifacts(lock: Lock) -> list[Artifact]:
    """Each pinned .deb at the mirror's pool path, then in the snapshot archive (which keeps every
    version Debian published, long after the mirror dropped it)."""
    if lock.apt.packages and not lock.apt.sources:
        raise BuildError("the lock pins apt packages but names no apt source; run `mlenv lock` again")
    return [
        Artifact(
            filename=pin.filename.rsplit("/", 1)[-1],
            sha256=pin.sha256,
            urls=deb_urls(lock.apt.sources, pin),
            package=pin.name,
            version=pin.version,
        )
        for pin in sorted(lock.apt.packages, key=lambda p: p.name)
    ]


def fetch(artifacts: list[Artifact], store: ContentStore, progress: Progress) -> dict[str, Path]:
    """Every artifact in the cache, verified; filename -> cached path. Each comes from the first place
    that has it (ContentStore.fetch_first: the cache, the URLs unless the store's network is off, the
    store's vault), and one line names the pin and every place when none has it."""
    found: dict[str, Path] = {}
    for index, artifact in enumerate(artifacts, start=1):
        cached = store.cached(artifact.sha256)
        if cached is None:
            progress(f"fetch {index}/{len(artifacts)} {artifact.filename}")
            pin = f"{artifact.package} {artifact.version}" if artifact.package else ""
            what = f"{pin} ({artifact.filename})" if pin else artifact.filename
            cached = store.fetch_first(artifact.sha256, artifact.urls, what=what, filename=artifact.filename)
        found[artifact.filename] = cached
    return found
