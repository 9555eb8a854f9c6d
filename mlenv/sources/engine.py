"""The Docker engine, and the user's docker config: the only module that uses the docker SDK.

The engine is found the way the docker CLI finds it (DOCKER_HOST, else the default socket). The SDK
is imported when an engine is connected or a docker config read, never at import time, so commands
and layers that only name an engine (build takes one as a parameter) do not pay for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mlenv.errors import ImageError, SourceError
from mlenv.progress import current

if TYPE_CHECKING:
    import docker

CHUNK = 1 << 20
TIMEOUT = 900  # seconds: a build step or a save of a large image is slow, not stuck


def _failures() -> tuple[type[Exception], ...]:
    """What a broken engine raises: the SDK's errors, and the HTTP layer's when a stream is cut (an
    engine that restarts mid-build): neither is a bug in mlenv."""
    import requests
    import urllib3
    from docker.errors import DockerException

    return DockerException, requests.RequestException, urllib3.exceptions.HTTPError


class Engine:
    """One connection to the engine; close it (or use `with`) when done."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def build(self, **options: Any) -> Iterator[dict[str, Any]]:
        """The low-level build API's decoded progress stream (the options are the API's own)."""
        steps = current()
        try:
            for chunk in self._client.api.build(**options):
                line = chunk.get("stream", "").strip() if isinstance(chunk, dict) else ""
                if line:
                    steps.step(f"build: {line[:100]}")  # the step and its latest output line
                yield chunk
        except _failures() as error:
            raise SourceError(f"docker build could not run: {error}") from None

    def push(self, name: str) -> str:
        """Push the tag `name` (REGISTRY/REPOSITORY:TAG) with the user's docker credentials; the manifest
        digest the registry stored."""
        repository, _, tag = name.rpartition(":")
        if not repository or "/" in tag:
            raise SourceError(f"{name}: --push needs a tag REGISTRY/REPOSITORY:TAG")
        digest = None
        try:
            for event in self._client.api.push(repository, tag=tag, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise SourceError(f"docker push of {name} failed: {str(event['error'])[:300]}")
                aux = event.get("aux") if isinstance(event, dict) else None
                if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
                    digest = aux["Digest"]
        except _failures() as error:
            raise SourceError(f"docker push of {name} could not run: {error}") from None
        if digest is None:
            raise SourceError(f"docker push of {name} reported no digest")
        return digest

    def image_id(self, name: str) -> str | None:
        """The engine's ID for `name`, or None when it has no such image."""
        from docker.errors import ImageNotFound, NotFound

        try:
            return str(self._client.images.get(name).id)
        except (ImageNotFound, NotFound):
            return None

    def platform(self, name: str) -> str:
        """`os/architecture` of `name`, from the engine's metadata."""
        from docker.errors import ImageNotFound, NotFound

        try:
            attrs = self._client.images.get(name).attrs
        except (ImageNotFound, NotFound):
            raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine") from None
        return f"{attrs.get('Os')}/{attrs.get('Architecture')}"

    def diff_ids(self, name: str) -> list[str]:
        """The layer diff_ids of `name`, bottom first, from the engine's metadata (no layer is read)."""
        from docker.errors import ImageNotFound, NotFound

        try:
            return list(self._client.images.get(name).attrs["RootFS"].get("Layers") or [])
        except (ImageNotFound, NotFound):
            raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine") from None

    def save_image(self, name: str) -> Iterator[bytes]:
        """`docker save NAME` as a stream of tar chunks (read it before closing the engine)."""
        return self.start_save(name)[1]

    def _save_stream(self, image_id: str) -> Iterator[bytes]:
        """GET /images/ID/get (what `docker save` asks), sent now; the body is read as it is consumed,
        decoded by sources.chunked straight from the connection's reader where the HTTP stack is the
        usual one (http.client under urllib3), else through requests in CHUNK pieces."""
        import requests
        from docker.errors import create_api_error_from_http_exception

        api = self._client.api
        # The request exactly as the SDK's get_image sends it (its headers, its timeout); only the body
        # is read differently.
        response = api._get(api._url("/images/{0}/get", image_id), stream=True)
        try:
            response.raise_for_status()
        except requests.HTTPError as error:
            response.close()
            raise create_api_error_from_http_exception(error) from None
        return _body(response)

    def start_save(self, name: str) -> tuple[list[str], Iterator[bytes]]:
        """`save_image`, with the request sent now from a worker thread, so the caller works meanwhile:
        dockerd's exporter writes the whole export to a temporary directory before it sends the first
        byte (3.9 of the 4.6 s of `docker save` of the fraud image). A missing image fails here, at
        once: the image is inspected first, on this connection, which also gives the layers' diff_ids
        as the engine lists them."""
        from docker.errors import ImageNotFound, NotFound

        try:
            image = self._client.images.get(name)
            image_id = str(image.id)
            diff_ids = [str(d) for d in (image.attrs.get("RootFS") or {}).get("Layers") or ()]
        except (ImageNotFound, NotFound):
            raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine") from None
        except _failures() as error:
            raise SourceError(f"docker save {name} failed: {error}") from None
        pending = _Pending(lambda: self._save_stream(image_id))

        def chunks() -> Iterator[bytes]:
            yield from pending.result()

        return diff_ids, _named_failures(name, chunks())

    def load_archive(self, data: bytes) -> None:
        """`docker load` a docker-archive tar held in memory (its manifest names the tags)."""
        from docker.errors import APIError

        try:
            self._client.images.load(data)
        except APIError as error:
            raise SourceError(f"docker load failed: {error.explanation or error}") from None

    def load_file(self, path: Path) -> None:
        """`docker load` a docker-archive tar file, streamed (its manifest names the tags)."""
        from docker.errors import APIError

        try:
            with path.open("rb") as archive:
                for chunk in self._client.api.load_image(archive):
                    if isinstance(chunk, dict) and chunk.get("error"):  # reported in the stream, not raised
                        raise SourceError(f"docker load failed: {str(chunk['error']).strip()}")
        except APIError as error:
            raise SourceError(f"docker load failed: {error.explanation or error}") from None
        except _failures() as error:
            raise SourceError(f"docker load failed: {error}") from None

    def remove_untagged(self, image_id: str) -> bool:
        """Remove an image no tag names (a build stage's), with its untagged parents; never a tagged
        one, and not one another image is built on. True when it was removed."""
        from docker.errors import APIError, ImageNotFound, NotFound

        try:
            if self._client.images.get(image_id).tags:
                return False
            self._client.images.remove(image_id, force=False, noprune=False)
        except (ImageNotFound, NotFound):
            return False
        except APIError:  # in use: a container, or a child image of another build
            return False
        return True

    def remove_image(self, name: str) -> None:
        from docker.errors import ImageNotFound, NotFound

        try:
            self._client.images.remove(name, force=True, noprune=False)
        except (ImageNotFound, NotFound):
            pass


def _named_failures(name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    from mlenv.sources.chunked import ChunkedError

    failures: tuple[type[Exception], ...] = (*_failures(), ChunkedError, OSError)
    try:
        yield from chunks
    except failures as error:
        raise SourceError(f"docker save {name} failed: {error}") from None


def _body(response: Any) -> Iterator[bytes]:
    """A streamed response's body, then the connection closed (it is not handed back half read)."""
    from mlenv.sources.chunked import dechunked

    # urllib3's response wraps http.client's, whose `fp` is the socket's buffered reader, just past the
    # headers while nothing of the body was read.
    inner = getattr(response.raw, "_fp", None)
    reader = getattr(inner, "fp", None)
    direct = getattr(inner, "chunked", False) and getattr(inner, "chunk_left", 0) is None
    try:
        if direct and reader is not None and hasattr(reader, "read1"):
            yield from dechunked(reader.read1)
        else:
            yield from response.iter_content(CHUNK, decode_unicode=False)
    finally:
        response.close()


class _Pending:
    """A call running in a daemon thread (the HTTP request of a save, until its headers arrive)."""

    def __init__(self, call: Callable[[], Iterable[bytes]]) -> None:
        self._value: Iterable[bytes] = ()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True, name="docker-save")
        self._thread.start()

    def _run(self, call: Callable[[], Iterable[bytes]]) -> None:
        try:
            self._value = call()
        except BaseException as error:  # handed to the reader's thread, which raises it
            self._error = error

    def result(self) -> Iterable[bytes]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class SaveRequest:
    """A `docker save` of one image, requested on a connection of its own, its stream not read yet (the
    image was inspected first, so a missing one failed already). Close it when done."""

    def __init__(self, name: str, engine: Engine, diff_ids: list[str], chunks: Iterator[bytes]) -> None:
        self.name = name
        self.engine = engine
        self.diff_ids = diff_ids  # as the engine lists them; the layers read are checked against the config
        self.chunks = chunks

    def close(self) -> None:
        self.engine.close()


def request_save(name: str) -> SaveRequest:
    """Connect and request `docker save NAME` (Engine.start_save): the caller works while dockerd exports."""
    engine = connect()
    try:
        diff_ids, chunks = engine.start_save(name)
    except BaseException:
        engine.close()
        raise
    return SaveRequest(name, engine, diff_ids, chunks)


def connect() -> Engine:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=TIMEOUT)
        client.ping()
    except DockerException as error:
        raise SourceError(
            f"cannot reach the Docker engine: {error}", hint="start dockerd, or set DOCKER_HOST to its socket"
        ) from None
    return Engine(client)


class DockerCredentials:
    """The user's registry credentials, from the docker config (credential helpers and stores included)."""

    def __init__(self, docker_config: str | Path | None = None) -> None:
        from docker import auth

        directory = docker_config or os.environ.get("DOCKER_CONFIG")
        path = str(Path(directory) / "config.json") if directory else None
        self._config = auth.load_config(config_path=path)

    def for_registry(self, registry: str, *, docker_hub: bool) -> tuple[str, str] | None:
        """(user, password) for `registry`, or None; Docker Hub's are filed under its v1 index URL."""
        from docker import auth

        lookup = "https://index.docker.io/v1/" if docker_hub else registry
        found = auth.resolve_authconfig(self._config, lookup)
        if not found:
            return None
        user = found.get("username") or found.get("Username")
        password = found.get("password") or found.get("Password")
        return (user, password) if user and password else None
