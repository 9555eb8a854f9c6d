"""What the final stage's instructions set on the image config, as data.

The Dockerfile writes its ENV, WORKDIR, VOLUME, USER, EXPOSE, HEALTHCHECK, LABEL, ENTRYPOINT and CMD
lines from `image_settings`; verify expects `final_config(image_settings(...), base config)`. One
source, so what the Dockerfile says and what verify expects cannot part.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlenv.model.facts import ConfigFact, HealthcheckFact, argv_of, healthcheck_of
from mlenv.model.labels import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_NAME,
    LABEL_CREATED,
    LABEL_DRIVER_FLOOR,
    LABEL_LOCK,
    LABEL_TITLE,
    LABEL_VERSION,
)
from mlenv.model.lock import Lock, LockedModel
from mlenv.model.time import rfc3339
from mlenv.render.entrypoint import ENTRYPOINT_PATH, needs_entrypoint

_SECOND = 1_000_000_000  # the engine stores HEALTHCHECK durations in nanoseconds
HEALTH_INTERVAL, HEALTH_TIMEOUT, HEALTH_START, HEALTH_RETRIES = 30 * _SECOND, 5 * _SECOND, 10 * _SECOND, 3


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """The config values the final stage sets, in the order its instructions set them."""

    venv_env: tuple[tuple[str, str], ...]  # one ENV before the user is made
    app_env: tuple[tuple[str, str], ...]  # the lock's [app] env, one ENV each
    working_dir: str
    volumes: tuple[str, ...]
    user: str
    exposed_ports: tuple[str, ...]
    healthcheck: HealthcheckFact | None
    labels: tuple[tuple[str, str], ...]
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None


def mount_dir(model: LockedModel) -> str:
    """The VOLUME a mounted model's directory becomes."""
    return model.target.rsplit("/", 1)[0] or "/"


def venv_path(lock: Lock) -> str:
    venv = lock.python.venv
    return f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def venv_env(lock: Lock) -> tuple[tuple[str, str], ...]:
    """The variables the venv's ENV sets (a dependency layer's: they depend on the venv path only)."""
    return (
        ("VIRTUAL_ENV", lock.python.venv),
        ("PATH", venv_path(lock)),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    )


# Libraries that decode or encode video on the GPU (NVDEC/NVENC): the container then needs the driver's
# `video` capability too. apt names by prefix, Python distributions by name.
VIDEO_APT = ("ffmpeg", "libavcodec", "gstreamer1.0-plugins-bad")
VIDEO_PYTHON = frozenset(
    {"pynvvideocodec", "torchcodec", "decord", "nvidia-dali-cuda120", "nvidia-dali-cuda110"}
)


def home_dir(lock: Lock) -> str:
    """The service user's HOME: made in the user step, owned by the user with its .cache, so what a
    torch or Hugging Face service writes (model hub cache, triton kernels, torch.compile) has a place."""
    return f"/home/{lock.app.user}"


def runtime_env(lock: Lock) -> dict[str, str]:
    """What a service needs at run time, before the spec's [app] env (which may redirect any of these,
    e.g. HF_HOME to a mounted volume): HOME and the caches ML libraries write; and, when the lock has
    CUDA, the NVIDIA container runtime's variables, so a GPU node's runtime exposes the GPUs and refuses
    a driver below the locked stack's floor when the container starts."""
    home = home_dir(lock)
    cache = f"{home}/.cache"
    env = {
        "HOME": home,
        "XDG_CACHE_HOME": cache,
        "HF_HOME": f"{cache}/huggingface",
        "TORCH_HOME": f"{cache}/torch",
        "TRITON_CACHE_DIR": f"{cache}/triton",
    }
    if lock.cuda.release is not None:
        video = any(p.name.startswith(VIDEO_APT) for p in lock.apt.packages) or any(
            p.name in VIDEO_PYTHON for p in lock.python.packages
        )
        env["NVIDIA_VISIBLE_DEVICES"] = "all"
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility,video" if video else "compute,utility"
        # Comma-separated constraints are ANDed by the runtime (as in NVIDIA's own images' variable).
        require = f"cuda>={lock.cuda.release}"
        if lock.cuda.min_driver is not None:
            require += f",driver>={lock.cuda.min_driver}"
        env["NVIDIA_REQUIRE_CUDA"] = require
    return env


def image_settings(lock: Lock, *, lock_digest: str, mlenv_version: str) -> ImageSettings:
    assert lock.base is not None
    venv = lock.python.venv
    labels = {
        LABEL_TITLE: lock.name,
        LABEL_BASE_NAME: lock.base.reference,
        LABEL_BASE_DIGEST: lock.base.digest,
        LABEL_LOCK: lock_digest,
        LABEL_VERSION: mlenv_version,
    }
    if lock.as_of is not None:
        labels[LABEL_CREATED] = rfc3339(lock.as_of)
    if lock.cuda.release is not None and lock.cuda.min_driver is not None:
        labels[LABEL_DRIVER_FLOOR] = lock.cuda.min_driver
    env = {**runtime_env(lock), **dict(lock.app.env)}
    mounts = sorted((m for m in lock.models if m.strategy == "mount"), key=lambda m: m.target)
    return ImageSettings(
        venv_env=venv_env(lock),
        app_env=tuple(sorted(env.items())),
        working_dir=lock.app.workdir,
        volumes=tuple(mount_dir(m) for m in mounts),
        user=lock.app.user,
        exposed_ports=(f"{lock.app.port}/tcp",) if lock.app.port is not None else (),
        healthcheck=_healthcheck(lock),
        labels=tuple(sorted(labels.items())),
        entrypoint=(f"{venv}/bin/python", ENTRYPOINT_PATH) if needs_entrypoint(lock) else None,
        cmd=tuple(lock.app.cmd) if lock.app.cmd else None,
    )


def _healthcheck(lock: Lock) -> HealthcheckFact | None:
    check = lock.app.healthcheck
    if check is None:
        return None
    if check.startswith("/"):
        url = f"http://127.0.0.1:{lock.app.port or 80}{check}"
        code = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=4)"
        test: tuple[str, ...] = ("CMD", f"{lock.python.venv}/bin/python", "-c", code)
    elif check.startswith("["):
        test = ("CMD", *(str(word) for word in json.loads(check)))  # `HEALTHCHECK CMD [...]` (exec form)
    else:
        test = ("CMD-SHELL", check)  # `HEALTHCHECK CMD line` (shell form)
    return HealthcheckFact(
        test=test,
        interval=HEALTH_INTERVAL,
        timeout=HEALTH_TIMEOUT,
        start_period=HEALTH_START,
        retries=HEALTH_RETRIES,
    )


def final_config(settings: ImageSettings, base: Mapping[str, Any], *, platform: str) -> ConfigFact:
    """The config the engine gives the final image: the base's config (an OCI config blob) with the
    final stage's instructions applied the way the engine applies them. ENV replaces a variable the
    base set (PATH) and adds the rest; EXPOSE, VOLUME and LABEL add to the base's; an ENTRYPOINT
    clears the CMD the base set; what the stage does not set (StopSignal) stays the base's."""
    inner = base.get("config") or {}
    env: dict[str, str] = {}
    for item in inner.get("Env") or ():
        key, _, value = str(item).partition("=")
        env[key] = value
    env.update(settings.venv_env)
    env.update(settings.app_env)
    labels = {str(k): str(v) for k, v in (inner.get("Labels") or {}).items()}
    labels.update(settings.labels)
    entrypoint = settings.entrypoint if settings.entrypoint is not None else argv_of(inner.get("Entrypoint"))
    if settings.cmd is not None:
        cmd = settings.cmd
    elif settings.entrypoint is not None:
        cmd = None
    else:
        cmd = argv_of(inner.get("Cmd"))
    os_name, _, rest = platform.partition("/")
    return ConfigFact(
        user=settings.user,
        cmd=cmd,
        entrypoint=entrypoint,
        env=tuple(sorted(env.items())),
        working_dir=settings.working_dir,
        exposed_ports=tuple(sorted({*(inner.get("ExposedPorts") or {}), *settings.exposed_ports})),
        healthcheck=settings.healthcheck or healthcheck_of(inner),
        volumes=tuple(sorted({*(inner.get("Volumes") or {}), *settings.volumes})),
        stop_signal=inner.get("StopSignal") or None,
        labels=tuple(sorted(labels.items())),
        os=os_name,
        architecture=rest.partition("/")[0],
    )
