"""The final image written by mlenv: the dependency image's layers, then the final steps' tars as
layers and their config, loaded into the engine as one small archive.

The final steps (render.dockerfile.final_steps: app code, models, the entrypoint, USER, LABEL, CMD, ...)
are what changes between two builds of a project; the layers below them change only with the lock's
base, apt and python sections. Writing these steps here instead of running them in the engine means a
rebuild after an app edit sends the engine the app's tar and a config, nothing else: the context with
the wheels is not sent, the engine re-checks no copy of the venv, and no export of the whole image is
needed to give the config its build-independent times (it is written with them).

Each instruction is applied the way the legacy builder applies it (ENV replaces a variable in place or
adds it, LABEL/EXPOSE/VOLUME add to the base's, an ENTRYPOINT clears an inherited CMD), from the same
data the Dockerfile's lines are written from (render.config.image_settings), and the history gets one
entry per instruction as the builder writes it. `docker build` of the rendered Dockerfile gives an image
with the same files and config; its layers differ only in how the engine writes a tar.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlenv.model.time import rfc3339_at
from mlenv.observe.image.local import LocalImage, LocalLayer
from mlenv.render.config import ImageSettings
from mlenv.render.dockerfile import FinalStep

NOP = "/bin/sh -c #(nop) "  # how the legacy builder records an instruction that runs nothing


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    """ENV KEY=VALUE as the builder applies it: the variable replaced where it is, else appended."""
    entry = f"{key}={value}"
    for index, item in enumerate(env):
        if item.partition("=")[0] == key:
            return [*env[:index], entry, *env[index + 1 :]]
    return [*env, entry]


def apply_settings(inner: Mapping[str, Any], settings: ImageSettings) -> dict[str, Any]:
    """The container config after the final steps, given the dependency image's."""
    config = dict(inner)
    env = [str(item) for item in config.get("Env") or ()]
    for key, value in settings.app_env:
        env = _set_env(env, key, value)
    config["Env"] = env
    config["WorkingDir"] = settings.working_dir
    if settings.volumes:
        config["Volumes"] = {**(config.get("Volumes") or {}), **{path: {} for path in settings.volumes}}
    config["User"] = settings.user
    if settings.exposed_ports:
        ports = {**(config.get("ExposedPorts") or {}), **{port: {} for port in settings.exposed_ports}}
        config["ExposedPorts"] = ports
    if settings.healthcheck is not None:
        check = settings.healthcheck
        config["Healthcheck"] = {
            "Test": list(check.test),
            "Interval": check.interval,
            "Timeout": check.timeout,
            "StartPeriod": check.start_period,
            "Retries": check.retries,
        }
    config["Labels"] = {**(config.get("Labels") or {}), **dict(settings.labels)}
    if settings.entrypoint is not None:
        config["Entrypoint"] = list(settings.entrypoint)
        config["Cmd"] = None  # the builder drops a CMD inherited from the base when ENTRYPOINT is set
    if settings.cmd is not None:
        config["Cmd"] = list(settings.cmd)
    return config


def history_text(step: FinalStep) -> str:
    """An instruction as the builder records it: one line (a multi-line LABEL joined)."""
    return NOP + " ".join(part.strip() for part in step.instruction.split("\\\n"))


def final_config(
    dependency: Mapping[str, Any],
    steps: Sequence[FinalStep],
    settings: ImageSettings,
    layers: Mapping[str, str],
    *,
    epoch: int,
) -> bytes:
    """The final image's config as canonical JSON: `dependency` (the dependency image's config) with the
    steps applied; `layers` maps each step's tar to its diff_id. Steps that only check (the models'
    sha256) are done on the host and leave no history entry."""
    created = rfc3339_at(epoch)
    history = list(dependency.get("history") or [])
    diff_ids = list((dependency.get("rootfs") or {}).get("diff_ids") or [])
    for step in steps:
        if step.checks_only:
            continue
        entry: dict[str, Any] = {"created": created, "created_by": history_text(step)}
        if step.tar is None:
            entry["empty_layer"] = True
        else:
            diff_ids.append(layers[step.tar])
        history.append(entry)
    config = {
        **dependency,
        "config": apply_settings(dependency.get("config") or {}, settings),
        "created": created,
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def local_image(
    name: str,
    dependency: Mapping[str, Any],
    config: bytes,
    tars: Mapping[str, Path],
    layers: Mapping[str, str],
) -> LocalImage:
    """The final image as files: its lower layers named only (the engine holds them), the new ones by tar."""
    lower = [LocalLayer(diff_id=d, tar=None) for d in (dependency.get("rootfs") or {}).get("diff_ids") or []]
    upper = {diff_id: tars[tar] for tar, diff_id in layers.items()}
    ordered = json.loads(config)["rootfs"]["diff_ids"][len(lower) :]
    return LocalImage(
        name=name,
        config=config,
        layers=(*lower, *(LocalLayer(diff_id=d, tar=upper[d]) for d in ordered)),
    )


def write_load_archive(image: LocalImage, destination: Path, *, epoch: int) -> None:
    """A `docker load` archive of `image`: its config, a manifest naming the tag, and the layers the
    engine lacks. The lower layers are left out: the engine reads a layer from the archive only when it
    has none with that chain, and the dependency image it has holds them (a missing one fails the load,
    never gives another image)."""
    image_hex = image.image_id.removeprefix("sha256:")
    layer_paths = [f"{layer.diff_id.removeprefix('sha256:')}/layer.tar" for layer in image.layers]
    manifest = [{"Config": f"{image_hex}.json", "RepoTags": [image.name], "Layers": layer_paths}]
    with tarfile.open(destination, "w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in (
            (f"{image_hex}.json", image.config),
            ("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, epoch
            archive.addfile(info, io.BytesIO(data))
        for layer, path in zip(image.layers, layer_paths, strict=True):
            if layer.tar is not None:
                info = archive.gettarinfo(str(layer.tar), arcname=path)
                info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
                with layer.tar.open("rb") as handle:
                    archive.addfile(info, handle)
