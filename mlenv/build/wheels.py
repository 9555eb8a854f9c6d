"""Wheels the lock says were built on the host, rebuilt when the content store lacks them.

`mlenv lock` put each built wheel into the store; another machine, or a cleaned cache, does not have
it. The lock holds everything to build it again (the sdist's sha256, the directory and its tree hash,
the git commit), so the wheel is rebuilt the way lock built it and accepted only with the lock's
sha256: a build that gives other bytes is refused with one line, never installed.
"""

from __future__ import annotations

from pathlib import Path

from mlenv.errors import BuildError
from mlenv.model.lock import Lock, PythonFile, PythonPin
from mlenv.model.spec import SourceRequirement
from mlenv.sources.cas import ContentStore
from mlenv.sources.python.hostbuild import HostBuilder
from mlenv.spec import tree_sha256


def missing_built_wheels(lock: Lock, store: ContentStore) -> list[tuple[PythonPin, PythonFile]]:
    """(pin, wheel) of each wheel built at lock that the store (or its vault) does not hold."""
    return [
        (pin, wheel)
        for pin in sorted(lock.python.packages, key=lambda p: p.name)
        for wheel in pin.wheels
        if wheel.hash_source == "built" and store.get(wheel.sha256) is None
    ]


def rebuild_missing(lock: Lock, project_dir: Path, store: ContentStore) -> list[str]:
    """Rebuild every built wheel the store lacks into it; the names of those rebuilt, sorted."""
    builder = HostBuilder(
        store,
        project_dir=project_dir,
        python_version=lock.target.python,
        index_url=lock.python.index_url,
        extra_index_urls=lock.python.extra_index_urls,
    )
    rebuilt = []
    for pin, wheel in missing_built_wheels(lock, store):
        what = f"{pin.name} {pin.version} ({wheel.name})"
        if wheel.built_from == "sdist" and pin.sdist is not None:
            again = builder.from_sdist(pin.name, pin.version, pin.sdist).file
        elif pin.source is not None and pin.source.kind == "directory":
            tree = project_dir / pin.source.url
            if not tree.is_dir() or tree_sha256(tree) != pin.source.tree_sha256:
                raise BuildError(
                    f"{what}: ./{pin.source.url} is not the tree the lock was built from",
                    hint="run `mlenv lock`",
                )
            again = builder.from_source(
                SourceRequirement(
                    kind="directory", location=pin.source.url, tree_sha256=pin.source.tree_sha256
                )
            )[0].file
        elif pin.source is not None and pin.source.commit_id is not None:
            again = builder.from_source(
                SourceRequirement(kind="vcs", location=pin.source.url, revision=pin.source.commit_id)
            )[0].file
        else:
            raise BuildError(f"{what}: the lock records no source to build it from", hint="run `mlenv lock`")
        if again.sha256 != wheel.sha256:
            store.path_for(again.sha256).unlink(missing_ok=True)
            raise BuildError(
                f"{what}: rebuilt on this host it has sha256 {again.sha256}, the lock says {wheel.sha256}",
                hint="its build is not reproducible here; run `mlenv lock` to lock this host's wheel",
            )
        rebuilt.append(wheel.name)
    return sorted(rebuilt)
