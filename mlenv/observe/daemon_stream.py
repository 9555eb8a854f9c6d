"""`docker save` as a stream of tar chunks, through mlenv.sources.daemon (the project's one door to
the Docker engine) when it offers save_image, else straight through the docker SDK."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from mlenv.errors import ImageError, SourceError

CHUNK = 1 << 20


def save_chunks(name: str) -> Iterator[bytes]:
    try:
        daemon = importlib.import_module("mlenv.sources.daemon")
    except ImportError:
        return _sdk_save(name)
    if hasattr(daemon, "save_image"):
        return daemon.save_image(name)  # type: ignore[no-any-return]
    return _sdk_save(name)


def _sdk_save(name: str) -> Iterator[bytes]:
    import docker  # type: ignore[import-untyped]
    from docker.errors import DockerException, ImageNotFound, NotFound  # type: ignore[import-untyped]

    try:
        client = docker.from_env()
        image = client.images.get(name)
        stream = image.save(chunk_size=CHUNK, named=False)
    except (ImageNotFound, NotFound):
        raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine") from None
    except DockerException as error:
        raise SourceError(f"cannot reach the Docker engine: {error}") from None

    def chunks() -> Iterator[bytes]:
        try:
            yield from stream
        except DockerException as error:
            raise SourceError(f"docker save {name} failed: {error}") from None
        finally:
            client.close()

    return chunks()
