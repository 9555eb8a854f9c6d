"""The final image mlenv writes itself (build.assemble) is the one verify expects and the Dockerfile says.

verify's projection (render.config.final_config) and the assembler (build.assemble.apply_settings) both
apply the final stage's instructions; these tests hold them to the same answer on bases that set what a
base can set (a CMD the ENTRYPOINT must clear, labels and ports to add to, a PATH to replace)."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pytest

from mlenv.build.assemble import final_config, local_image, write_load_archive
from mlenv.model.lock import Lock, LockedCuda, LockedModel
from mlenv.observe.facts import config_fact
from mlenv.render import CONTEXT_DIR
from mlenv.render.config import final_config as expected_config
from mlenv.render.config import image_settings, venv_env
from mlenv.render.dockerfile import APP_TAR, ENTRYPOINT_TAR, MODELS_TAR, final_steps
from tests.lockdata import full_lock

DIGEST = "sha256:" + "ab" * 32
BASE_CONFIGS = {
    "plain": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["bash"]},
    "busy": {
        "Env": ["PATH=/usr/bin", "LANG=C.UTF-8", "HOME=/root"],
        "Cmd": ["python3"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Labels": {"maintainer": "someone", "org.opencontainers.image.title": "base"},
        "ExposedPorts": {"9000/tcp": {}},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGINT",
        "WorkingDir": "/srv",
        "User": "nobody",
    },
}


def dependency_config(lock: Lock, inner: dict[str, object]) -> dict[str, object]:
    """What the dependency image's config holds: the base's with the venv's ENV (the last ENV of the
    dependency stages), its history and layers."""
    env = [str(e) for e in inner.get("Env") or []]  # type: ignore[attr-defined]
    for key, value in venv_env(lock):
        env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {**inner, "Env": env},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:x in /"},
            {"created": "1970-01-01T00:00:00Z", "created_by": "/bin/sh -c apt-get install ..."},
        ],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]},
    }


def variants() -> dict[str, Lock]:
    lock = full_lock()
    no_cmd = dataclasses.replace(lock, app=dataclasses.replace(lock.app, cmd=()))
    mounted = dataclasses.replace(
        lock,
        models=(LockedModel(source="m.bin", target="/models/m.bin", strategy="mount", sha256="d" * 64),),
    )
    cuda = dataclasses.replace(
        lock, cuda=LockedCuda(requested="12.1", release="12.1", min_driver="530.30.02")
    )
    return {"full": lock, "no-cmd": no_cmd, "mounted-model": mounted, "cuda": cuda}


@pytest.mark.parametrize("base", sorted(BASE_CONFIGS))
@pytest.mark.parametrize("name", sorted(variants()))
def test_the_assembled_config_is_the_one_verify_expects(name: str, base: str) -> None:
    lock = variants()[name]
    inner = BASE_CONFIGS[base]
    settings = image_settings(lock, lock_digest=DIGEST, mlenv_version="1.2.3")
    steps = final_steps(lock, lock_digest=DIGEST, mlenv_version="1.2.3", context_dir=CONTEXT_DIR)
    layers = {step.tar: f"sha256:{n:064x}" for n, step in enumerate(steps, start=10) if step.tar}
    dependency = dependency_config(lock, inner)
    written = json.loads(final_config(dependency, steps, settings, layers, epoch=1719792000))

    base_config = {"architecture": "amd64", "os": "linux", "config": inner}
    assert config_fact(written) == expected_config(settings, base_config, platform="linux/amd64")
    # One history entry per instruction; the ones that add a layer line up with the new diff_ids.
    added = written["history"][2:]
    assert [h["created_by"].removeprefix("/bin/sh -c #(nop) ") for h in added] == [
        " ".join(part.strip() for part in s.instruction.split("\\\n")) for s in steps if not s.checks_only
    ]
    assert written["rootfs"]["diff_ids"][2:] == [layers[s.tar] for s in steps if s.tar]
    assert sum(1 for h in written["history"] if not h.get("empty_layer")) == len(
        written["rootfs"]["diff_ids"]
    )
    assert all(h["created"] == "2024-07-01T00:00:00Z" for h in added)


def test_the_final_steps_add_app_models_and_entrypoint_in_the_dockerfile_order() -> None:
    lock = dataclasses.replace(
        full_lock(),
        models=(LockedModel(source="m.bin", target="/app/models/m.bin", strategy="bake", sha256="d" * 64),),
    )
    steps = final_steps(lock, lock_digest=DIGEST, mlenv_version="1", context_dir=CONTEXT_DIR)
    assert [s.tar for s in steps if s.tar] == [APP_TAR, MODELS_TAR, ENTRYPOINT_TAR][
        : len([s for s in steps if s.tar])
    ]
    assert [s.checks_only for s in steps].count(True) == 1  # the models' sha256 check, done on the host


def test_the_load_archive_holds_the_config_the_manifest_and_only_the_new_layers(tmp_path: Path) -> None:
    lock = full_lock()
    settings = image_settings(lock, lock_digest=DIGEST, mlenv_version="1")
    steps = final_steps(lock, lock_digest=DIGEST, mlenv_version="1", context_dir=CONTEXT_DIR)
    app = tmp_path / APP_TAR
    with tarfile.open(app, "w") as archive:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("app/main.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    import hashlib

    layers = {APP_TAR: "sha256:" + hashlib.sha256(app.read_bytes()).hexdigest()}
    steps = [s for s in steps if s.tar in (None, APP_TAR)]
    dependency = dependency_config(lock, BASE_CONFIGS["plain"])
    config = final_config(dependency, steps, settings, layers, epoch=0)
    image = local_image("x:1", dependency, config, {APP_TAR: app}, layers)
    out = tmp_path / "load.tar"
    write_load_archive(image, out, epoch=0)
    with tarfile.open(out) as archive:
        names = archive.getnames()
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert archive.extractfile(f"{image.image_id.removeprefix('sha256:')}.json").read() == config  # type: ignore[union-attr]
    app_path = layers[APP_TAR].removeprefix("sha256:") + "/layer.tar"
    assert sorted(names) == sorted([manifest[0]["Config"], "manifest.json", app_path])
    assert manifest[0]["RepoTags"] == ["x:1"]
    assert len(manifest[0]["Layers"]) == 3 and manifest[0]["Layers"][-1] == app_path
    assert [layer.tar for layer in image.layers] == [None, None, app]
