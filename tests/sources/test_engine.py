"""The engine source: what a broken connection becomes (no engine needed), and the save stream read
from the real engine."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from mlenv.errors import ImageError, SourceError
from mlenv.sources import chunked
from mlenv.sources.engine import Engine
from tools.localbase.dockerd import Daemon


class CutApi:
    """A low-level API whose build stream breaks after one line, as when dockerd restarts mid-build."""

    def build(self, **options: Any) -> Iterator[dict[str, Any]]:
        yield {"stream": "Step 1/2 : FROM x\n"}
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(0 bytes read)")


class CutClient:
    api = CutApi()


def test_a_cut_build_stream_is_a_source_error_not_a_crash() -> None:
    engine = Engine(CutClient())  # type: ignore[arg-type]
    stream = engine.build(path=".", tag="x:1")
    assert next(stream) == {"stream": "Step 1/2 : FROM x\n"}
    with pytest.raises(SourceError, match="docker build could not run: .*Connection broken"):
        next(stream)


# ---------------------------------------------------------------------------- the real engine's save stream


@pytest.mark.docker
def test_the_save_stream_is_the_engines_byte_for_byte(
    docker_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine.save_image and start_save decode the engine's chunked body themselves: the bytes must be
    exactly what the SDK's own get_image yields, over many chunks (a layer of several MiB)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        data = os.urandom(5 << 20)
        info = tarfile.TarInfo("blob")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    name = "mlenv-test/chunked:1"
    docker_daemon.client.api.import_image_from_data(
        layer.getvalue(), repository="mlenv-test/chunked", tag="1"
    )
    try:
        image_id = docker_daemon.client.images.get(name).id  # a save by ID names no tag, as mlenv's
        expected = b"".join(docker_daemon.client.api.get_image(image_id, 1 << 20))
        decoded: list[int] = []
        real = chunked.dechunked
        monkeypatch.setattr(chunked, "dechunked", lambda read1: decoded.append(1) or real(read1))
        engine = Engine(docker_daemon.client)
        assert b"".join(engine.save_image(name)) == expected
        _, started = engine.start_save(name)
        assert b"".join(started) == expected
        assert decoded == [1, 1], "both read the connection directly, not through the SDK's stream"
        with pytest.raises(ImageError, match="docker-daemon:mlenv-test/absent:1: no such image"):
            engine.save_image("mlenv-test/absent:1")
    finally:
        docker_daemon.client.images.remove(name, force=True)
