"""Bit-for-bit reproducible images on the real engine: the same lock builds the same image ID.

One test builds the fraud detector three times (the costly one: about three builds' worth); the
other catches a deliberately non-reproducible step in two small images, through the same
comparison `mlenv build --check-reproducible` uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from mlenv.build.reproducible import compare_daemon_images, format_text, layers_to_read, second_tag
from mlenv.observe.image.layerfiles import read_saved_image
from mlenv.sources import engine
from tests.helpers import lock_tag, run_cli, session_tag
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage
from tools.localbase.project import copy_example, train_fraud_model

# Made by the engine in every build container; a layer holding one would carry host state.
RUNTIME_FILES = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"}


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_fraud_detector_builds_the_same_image_id_twice_without_cache(
    base_image_python: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    client = docker_daemon.client
    # A name of its own makes a lock (and so an image) of its own: the session's fraud image and the
    # drifted images built on it carry another lock label and are never removed here.
    project = copy_example(
        "fraud-detector", tmp_path, base={"image": base_image_python.ref}, name="fraud-repro"
    )
    train_fraud_model(project)
    locked = run_cli("lock", str(project))
    assert locked.code == 0, locked.stderr[-2000:]
    tag = lock_tag("repro-fraud", project / "mlenv.lock")

    # --check-reproducible builds twice without cache and compares.
    checked = run_cli("build", str(project), "--tag", tag, "--check-reproducible")
    assert checked.code == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    first = checked.stdout.strip()
    assert first.startswith("sha256:") and _image_id(client, tag) == first
    assert f"reproducible: {tag} and {second_tag(tag)} are both {first}" in checked.stderr
    assert _image_id(client, second_tag(tag)) is None  # the check's own tag is dropped when they match

    # What the layers mlenv added hold: no engine-made files, and no whiteouts (a deletion carries
    # the time it happened, so a reproducible build never deletes what a lower layer holds).
    with engine.connect() as connected:
        base_layers = len(connected.diff_ids(base_image_python.local))
        ours = connected.diff_ids(tag)[base_layers:]
        record = read_saved_image(tag, connected.save_image(tag), set(ours))
    assert record.image_id == first
    added = [path for layer in record.layers[base_layers:] for path in layer.entries or {}]
    assert len(added) > 1000  # the venv and the apt closure are there
    assert not RUNTIME_FILES & set(added)
    assert [path for path in added if path.rsplit("/", 1)[-1].startswith(".wh.")] == []


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_a_step_that_writes_the_date_is_named_with_its_layer(
    base_image_minbase: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image_minbase.local}\n"
        "RUN echo stable > /stable && touch -d @0 /stable\n"
        "RUN date +%s%N > /build-date\n"
    )
    tags = [session_tag("repro-date", base_image_minbase.ref, variant) for variant in ("a", "b")]
    connected = engine.connect()
    try:
        for tag in tags:
            docker_daemon.client.images.build(
                path=str(tmp_path), tag=tag, nocache=True, rm=True, forcerm=True, network_mode="none"
            )
            time.sleep(1.1)  # tar mtimes have whole seconds: builds in one second would share the mtime
        report = compare_daemon_images(connected, *tags)
        assert not report.identical
        base_layers = len(connected.diff_ids(base_image_minbase.local))
        assert [layer.index for layer in report.layers] == [base_layers + 2]  # the stable step matched
        layer = report.layers[0]
        assert layer.step.startswith("RUN date +%s%N > /build-date")
        assert [file.path for file in layer.files] == ["/build-date"]
        assert {field.field for field in layer.files[0].fields} >= {"content", "mtime"}
        text = format_text(report)
        assert f"layer {base_layers + 2} of {base_layers + 2} (RUN date +%s%N > /build-date)" in text
        assert "  /build-date: content sha256:" in text

        # The same image twice is identical without reading a layer.
        same = compare_daemon_images(connected, tags[0], tags[0])
        assert same.identical and format_text(same).startswith(f"reproducible: {tags[0]} and {tags[0]}")
        assert layers_to_read(connected.diff_ids(tags[0]), connected.diff_ids(tags[0])) == set()
    finally:
        connected.close()
        for tag in tags:
            if _image_id(docker_daemon.client, tag) is not None:
                docker_daemon.client.images.remove(tag, force=True)
