"""The image config the lock determines: the locked base's config with the final stage's instructions.

What the base sets (its Env, Labels, ExposedPorts, Volumes, StopSignal, a Cmd the stage keeps) is read
from the base's own config blob, named in the lock by its sha256 (`config_digest` of the locked
platform): from the content-addressed cache, else from the base's registry, hash-checked either way,
and kept in the cache. Never from the image under test, whose config is what is being judged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlenv import __version__
from mlenv.errors import ImageError
from mlenv.model.facts import ConfigFact
from mlenv.model.labels import LABEL_VERSION
from mlenv.model.lock import Lock
from mlenv.render.config import final_config, image_settings
from mlenv.render.dockerfile import base_reference
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import ImageReference, RegistryClient


def locked_config_digest(lock: Lock, platform: str) -> str:
    assert lock.base is not None
    for locked in lock.base.platforms:
        if locked.platform == platform:
            return locked.config_digest
    raise ImageError(f"the lock's base has no {platform} image (it has {_platforms(lock)})")


def _platforms(lock: Lock) -> str:
    assert lock.base is not None
    return ", ".join(p.platform for p in lock.base.platforms)


def base_config(
    lock: Lock, platform: str, *, store: ContentStore, registry: RegistryClient | None = None
) -> Mapping[str, Any]:
    """The locked base's config blob for `platform`, by its locked digest."""
    assert lock.base is not None
    digest = locked_config_digest(lock, platform)
    sha256 = digest.removeprefix("sha256:")
    data = store.get_bytes(sha256)
    if data is None:
        client = registry or RegistryClient()
        reference = ImageReference.parse(base_reference(lock.base))
        store.put_stream(
            sha256, client.blob_chunks(reference, digest), what=f"config {digest} of {lock.base.reference}"
        )
        data = store.get_bytes(sha256)
        assert data is not None
    config: Mapping[str, Any] = json.loads(data)
    return config


def expected_config(
    lock: Lock,
    *,
    lock_digest: str,
    platform: str,
    base: Mapping[str, Any],
    built_by: str | None = None,
) -> ConfigFact:
    """The config `mlenv build` gives the image. `built_by` is the version of mlenv that built it (the
    image's dev.mlenv.version label): it names the builder and is the one value the lock does not
    determine; without it, this mlenv's version is expected."""
    settings = image_settings(lock, lock_digest=lock_digest, mlenv_version=built_by or __version__)
    return final_config(settings, base, platform=platform)


def built_by(labels: tuple[tuple[str, str], ...]) -> str | None:
    return dict(labels).get(LABEL_VERSION)
