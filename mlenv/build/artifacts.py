"""Every locked artifact (wheels, .debs) fetched on the host and checked against the lock's sha256."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlenv.errors import BuildError
from mlenv.model.lock import Lock
from mlenv.model.target import target_tags, wheel_installs
from mlenv.model.urls import redact_text
from mlenv.sources.cas import ContentStore

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class Artifact:
    filename: str
    sha256: str
    urls: tuple[str, ...]  # tried in order; the hash decides, not the URL


def python_artifacts(lock: Lock, platform: str) -> list[Artifact]:
    """The wheels of every pin that install on `platform` (one platform is built at a time)."""
    tags = target_tags(lock.target, platform)
    artifacts = []
    for pin in sorted(lock.python.packages, key=lambda p: p.name):
        wheels = [w for w in pin.wheels if wheel_installs(w.name, tags)]
        if not wheels:
            raise BuildError(
                f"{pin.name}=={pin.version} has no wheel for {platform} in the lock",
                hint="a hermetic build installs wheels only; see `mlenv dockerfile --fetch build`",
            )
        artifacts += [Artifact(filename=w.name, sha256=w.sha256, urls=(w.url,)) for w in wheels]
    return artifacts


def apt_artifacts(lock: Lock) -> list[Artifact]:
    mirrors = tuple(dict.fromkeys(s.mirror.rstrip("/") for s in lock.apt.sources))
    if lock.apt.packages and not mirrors:
        raise BuildError("the lock pins apt packages but names no apt source; run `mlenv lock` again")
    return [
        Artifact(
            filename=pin.filename.rsplit("/", 1)[-1],
            sha256=pin.sha256,
            urls=tuple(f"{m}/{pin.filename}" for m in mirrors),
        )
        for pin in sorted(lock.apt.packages, key=lambda p: p.name)
    ]


def fetch(artifacts: list[Artifact], store: ContentStore, progress: Progress) -> dict[str, Path]:
    """Every artifact in the cache, verified; filename -> cached path."""
    found: dict[str, Path] = {}
    for index, artifact in enumerate(artifacts, start=1):
        cached = store.get(artifact.sha256)
        if cached is None:
            progress(f"fetch {index}/{len(artifacts)} {artifact.filename}")
            cached = _download_any(artifact, store)
        found[artifact.filename] = cached
    return found


def _download_any(artifact: Artifact, store: ContentStore) -> Path:
    from mlenv.sources.http import download_chunks  # requests is loaded only when something is fetched

    last_error: Exception | None = None
    for url in artifact.urls:
        try:
            return store.put_stream(artifact.sha256, download_chunks(url), what=artifact.filename)
        except BuildError:
            raise  # a hash mismatch is never retried from another mirror silently
        except Exception as error:  # try the next mirror, report the last failure
            last_error = error
    # The error may quote a URL; a mirror's credentials must not reach the error line.
    raise BuildError(f"cannot fetch {artifact.filename}: {redact_text(str(last_error))}")
