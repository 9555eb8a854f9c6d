"""What a service needs at run time, declared by the image: a writable HOME and caches for every lock,
and the NVIDIA container runtime's variables and the driver floor label exactly when the lock has CUDA."""

from __future__ import annotations

import dataclasses

from mlenv.model.labels import LABEL_DRIVER_FLOOR
from mlenv.model.lock import AptPin, Lock, LockedCuda
from mlenv.render import render
from mlenv.render.config import image_settings
from tests.lockdata import full_lock

DIGEST = "sha256:" + "ab" * 32
CUDA = LockedCuda(requested="12.1", release="12.1", min_driver="530.30.02")


def settings_env(lock: Lock) -> dict[str, str]:
    return dict(image_settings(lock, lock_digest=DIGEST, mlenv_version="1").app_env)


def labels(lock: Lock) -> dict[str, str]:
    return dict(image_settings(lock, lock_digest=DIGEST, mlenv_version="1").labels)


def test_every_lock_gets_a_writable_home_and_the_ml_caches_under_it() -> None:
    env = settings_env(full_lock())
    assert env["HOME"] == "/home/app"
    assert {env[k] for k in ("XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME", "TRITON_CACHE_DIR")} == {
        "/home/app/.cache",
        "/home/app/.cache/huggingface",
        "/home/app/.cache/torch",
        "/home/app/.cache/triton",
    }
    dockerfile = render(full_lock(), lock_digest=DIGEST, mlenv_version="1").get("Dockerfile").decode()
    assert (
        "--home-dir /home/app " in dockerfile
        and "install -d -o app -g app /home/app /home/app/.cache" in dockerfile
    )


def test_the_spec_env_redirects_a_cache_to_a_volume() -> None:
    lock = full_lock()
    lock = dataclasses.replace(lock, app=dataclasses.replace(lock.app, env=(("HF_HOME", "/data/hf"),)))
    assert settings_env(lock)["HF_HOME"] == "/data/hf"


def test_no_nvidia_variable_or_floor_label_without_cuda() -> None:
    lock = full_lock()
    assert lock.cuda.release is None
    assert not [k for k in settings_env(lock) if k.startswith("NVIDIA_")]
    assert LABEL_DRIVER_FLOOR not in labels(lock)
    assert "NVIDIA_" not in render(lock, lock_digest=DIGEST, mlenv_version="1").get("Dockerfile").decode()


def test_a_cuda_lock_declares_the_gpus_the_capabilities_and_the_driver_floor() -> None:
    lock = dataclasses.replace(full_lock(), cuda=CUDA)
    env = settings_env(lock)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.1,driver>=530.30.02"
    assert labels(lock)[LABEL_DRIVER_FLOOR] == "530.30.02"
    dockerfile = render(lock, lock_digest=DIGEST, mlenv_version="1").get("Dockerfile").decode()
    assert 'ENV NVIDIA_REQUIRE_CUDA="cuda>=12.1,driver>=530.30.02"' in dockerfile
    assert f'{LABEL_DRIVER_FLOOR}="530.30.02"' in dockerfile


def test_ffmpeg_in_the_lock_asks_for_the_video_capability() -> None:
    lock = dataclasses.replace(full_lock(), cuda=CUDA)
    ffmpeg = AptPin(
        name="ffmpeg",
        version="7:5.1.6-0+deb12u1",
        architecture="amd64",
        filename="pool/main/f/ffmpeg/ffmpeg_5.1.6-0+deb12u1_amd64.deb",
        size=1,
        sha256="e" * 64,
        requested=True,
    )
    lock = dataclasses.replace(lock, apt=dataclasses.replace(lock.apt, packages=(*lock.apt.packages, ffmpeg)))
    assert settings_env(lock)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"
