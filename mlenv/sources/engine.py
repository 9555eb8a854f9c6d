"""The Docker engine: the only module that talks to it through the docker SDK.

The engine is found the way the docker CLI finds it (DOCKER_HOST, else the default socket).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from mlenv.errors import ImageError, SourceError

CHUNK = 1 << 20


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except DockerException as error:
        raise SourceError(f"cannot reach the Docker engine: {error}",
                          hint="start dockerd, or set DOCKER_HOST to its socket") from None
    return client


def image_id(name: str) -> str | None:
    """The engine's ID for `name`, or None when it has no such image."""
    client = connect()
    try:
        return str(client.images.get(name).id)
    except (ImageNotFound, NotFound):
        return None
    finally:
        client.close()


def diff_ids(name: str) -> list[str]:
    """The layer diff_ids of `name`, bottom first, from the engine's metadata (no layer is read)."""
    client = connect()
    try:
        return list(client.images.get(name).attrs["RootFS"].get("Layers") or [])
    except (ImageNotFound, NotFound):
        raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine") from None
    finally:
        client.close()


def save_image(name: str) -> Iterator[bytes]:
    """`docker save NAME` as a stream of tar chunks."""
    client = connect()
    try:
        stream = client.images.get(name).save(chunk_size=CHUNK, named=False)
    except (ImageNotFound, NotFound):
        client.close()
        raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine") from None
    except DockerException as error:
        client.close()
        raise SourceError(f"docker save {name} failed: {error}") from None

    def chunks() -> Iterator[bytes]:
        try:
            yield from stream
        except DockerException as error:
            raise SourceError(f"docker save {name} failed: {error}") from None
        finally:
            client.close()

    return chunks()


def load_archive(path: Path) -> None:
    """`docker load` a docker-archive tar (its manifest names the tags)."""
    client = connect()
    try:
        with path.open("rb") as archive:
            client.images.load(archive)
    except APIError as error:
        raise SourceError(f"docker load failed: {error.explanation or error}") from None
    finally:
        client.close()


def remove_image(name: str) -> None:
    client = connect()
    try:
        client.images.remove(name, force=True, noprune=False)
    except (ImageNotFound, NotFound):
        pass
    finally:
        client.close()
