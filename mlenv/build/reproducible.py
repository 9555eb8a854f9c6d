"""Two builds of one lock compared layer by layer and file by file, the way diffoci does; and the
`--check-reproducible` build that makes the two.

Equal image IDs mean equal configs, hence equal diff_ids, hence byte-identical layers: nothing more
to read. Otherwise every layer whose diff_id differs from the other image's at the same index is
read entry by entry (by the observer, from the engine's `docker save` stream), and each path present
in either is compared on what a layer records about it: type, content sha256, size, mode, owner,
mtime, link target and xattrs. The comparison itself is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlenv.build.artifacts import Progress
from mlenv.build.image import BuildEngine, BuiltImage, build_image
from mlenv.errors import ImageError
from mlenv.model.lock import Lock
from mlenv.observe.image.layerfiles import FileMeta, ImageRecord, Layer, read_saved_image
from mlenv.sources.cas import ContentStore

SHOW_FILES = 20  # per layer in the text report; the count of the rest is given
SHOW_VALUE = 80  # characters of a config value in the text report


@dataclass(frozen=True, kw_only=True)
class FieldDiff:
    field: str
    a: str
    b: str


@dataclass(frozen=True, kw_only=True)
class FileDiff:
    path: str  # absolute, inside the image
    fields: tuple[FieldDiff, ...]


@dataclass(frozen=True, kw_only=True)
class LayerDiff:
    index: int  # 1-based, bottom first
    step: str  # the Dockerfile step that made the layer, from the image history
    diff_id_a: str | None  # None: the image has no layer at this index
    diff_id_b: str | None
    files: tuple[FileDiff, ...]


@dataclass(frozen=True, kw_only=True)
class ReproReport:
    a: str
    b: str
    image_id_a: str
    image_id_b: str
    layer_count: int
    config: tuple[FieldDiff, ...]
    layers: tuple[LayerDiff, ...]

    @property
    def identical(self) -> bool:
        return self.image_id_a == self.image_id_b and not self.config and not self.layers


def layers_to_read(diff_ids: list[str], other: list[str]) -> set[str]:
    """The diff_ids of `diff_ids` not matched by `other` at the same index: the layers worth reading."""
    return {d for i, d in enumerate(diff_ids) if i >= len(other) or other[i] != d}


def layer_steps(config: Mapping[str, Any]) -> list[str]:
    """The history step of each layer, bottom first (history entries marked empty_layer make none)."""
    steps = []
    for entry in config.get("history") or []:
        if entry.get("empty_layer"):
            continue
        text = str(entry.get("created_by", "")).strip()
        nop = "/bin/sh -c #(nop) "
        if nop in text:
            text = text.split(nop, 1)[1].strip()
        elif text.startswith("/bin/sh -c "):
            text = "RUN " + text.removeprefix("/bin/sh -c ")
        steps.append(text or "(no history)")
    return steps


def _fields(a: FileMeta, b: FileMeta) -> tuple[FieldDiff, ...]:
    pairs = [
        ("type", a.kind, b.kind),
        ("content", f"sha256:{a.sha256}" if a.sha256 else "-", f"sha256:{b.sha256}" if b.sha256 else "-"),
        ("size", str(a.size), str(b.size)),
        ("mode", f"{a.mode:04o}", f"{b.mode:04o}"),
        ("owner", f"{a.uid}:{a.gid}", f"{b.uid}:{b.gid}"),
        ("mtime", str(a.mtime), str(b.mtime)),
        ("link", a.link or "-", b.link or "-"),
        ("xattrs", _xattrs(a.xattrs), _xattrs(b.xattrs)),
    ]
    return tuple(FieldDiff(field=name, a=x, b=y) for name, x, y in pairs if x != y)


def _xattrs(values: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v!r}" for k, v in values) or "-"


def compare_entries(a: Mapping[str, FileMeta], b: Mapping[str, FileMeta]) -> tuple[FileDiff, ...]:
    """Every path whose record differs, or that only one side has, sorted by path."""
    found = []
    for path in sorted(set(a) | set(b)):
        left, right = a.get(path), b.get(path)
        if left is None or right is None:
            present = FieldDiff(
                field="present", a=str(left is not None).lower(), b=str(right is not None).lower()
            )
            found.append(FileDiff(path="/" + path, fields=(present,)))
            continue
        fields = _fields(left, right)
        if fields:
            found.append(FileDiff(path="/" + path, fields=fields))
    return tuple(found)


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.dumps(value, sort_keys=True)}


def compare_configs(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    """Differing config fields by dotted path; the layer list is left to the layer comparison."""
    left = _flatten({k: v for k, v in a.items() if k != "rootfs"})
    right = _flatten({k: v for k, v in b.items() if k != "rootfs"})
    return tuple(
        FieldDiff(field=key, a=left.get(key, "(absent)"), b=right.get(key, "(absent)"))
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    )


def compare_images(a: ImageRecord, b: ImageRecord) -> ReproReport:
    """What differs between two images: config fields, and per differing layer, the files."""
    steps_a, steps_b = layer_steps(a.config), layer_steps(b.config)
    layers = []
    for index in range(max(len(a.layers), len(b.layers))):
        left = a.layers[index] if index < len(a.layers) else None
        right = b.layers[index] if index < len(b.layers) else None
        if left is not None and right is not None and left.diff_id == right.diff_id:
            continue
        if left is not None and right is not None and left.entries is not None and right.entries is not None:
            files = compare_entries(left.entries, right.entries)
        else:
            files = ()
        steps = steps_a if index < len(steps_a) else steps_b  # from the image that has the layer
        layers.append(
            LayerDiff(
                index=index + 1,
                step=steps[index] if index < len(steps) else "(no history)",
                diff_id_a=left.diff_id if left else None,
                diff_id_b=right.diff_id if right else None,
                files=files,
            )
        )
    return ReproReport(
        a=a.name,
        b=b.name,
        image_id_a=a.image_id,
        image_id_b=b.image_id,
        layer_count=max(len(a.layers), len(b.layers)),
        config=compare_configs(a.config, b.config),
        layers=tuple(layers),
    )


def _short(text: str, limit: int = SHOW_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_text(report: ReproReport) -> str:
    """The report for people: one line per differing layer and file, config fields last."""
    if report.identical:
        return f"reproducible: {report.a} and {report.b} are both {report.image_id_a}\n"
    lines = [f"not reproducible: {report.a} is {report.image_id_a}, {report.b} is {report.image_id_b}"]
    for layer in report.layers:
        lines.append(
            f"layer {layer.index} of {report.layer_count} ({_short(layer.step, 100)}): "
            f"{layer.diff_id_a or 'missing'} vs {layer.diff_id_b or 'missing'}"
        )
        for file in layer.files[:SHOW_FILES]:
            what = "; ".join(f"{f.field} {_short(f.a)} vs {_short(f.b)}" for f in file.fields)
            lines.append(f"  {file.path}: {what}")
        if len(layer.files) > SHOW_FILES:
            lines.append(f"  … and {len(layer.files) - SHOW_FILES} more files")
        if layer.diff_id_a and layer.diff_id_b and not layer.files:
            lines.append("  same files and metadata; the tar streams differ (entry order or header format)")
    for field in report.config:
        lines.append(f"config: {field.field}: {_short(field.a)} vs {_short(field.b)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- two builds on the engine


def compare_daemon_images(engine: BuildEngine, a: str, b: str) -> ReproReport:
    """Compare two images in the engine; the layers are read only where their diff_ids differ."""
    ids = []
    for name in (a, b):
        found = engine.image_id(name)
        if found is None:
            raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine")
        ids.append(found)
    layers_a, layers_b = engine.diff_ids(a), engine.diff_ids(b)
    if ids[0] == ids[1]:
        # One config, so one list of layers: nothing to read.
        unread = tuple(Layer(diff_id=d, entries=None) for d in layers_a)
        return compare_images(
            ImageRecord(name=a, image_id=ids[0], config={}, layers=unread),
            ImageRecord(name=b, image_id=ids[1], config={}, layers=unread),
        )
    record_a = read_saved_image(a, engine.save_image(a), layers_to_read(layers_a, layers_b))
    record_b = read_saved_image(b, engine.save_image(b), layers_to_read(layers_b, layers_a))
    return compare_images(record_a, record_b)


def second_tag(tag: str) -> str:
    """The tag of the check build: the same repository, `-repro` after the tag."""
    repository, _, name = tag.rpartition(":")
    if not repository or "/" in name:  # no tag given: "host:port/repo" or "repo"
        return f"{tag}:latest-repro"
    return f"{repository}:{name}-repro"


def check_reproducible(
    lock: Lock,
    *,
    engine: BuildEngine,
    lock_digest: str,
    project_dir: Path,
    tag: str,
    progress: Progress,
    mlenv_version: str,
    store: ContentStore | None = None,
    platform: str | None = None,
) -> tuple[BuiltImage, ReproReport]:
    """Build twice without cache (the second as `second_tag(tag)`) and compare the two images.

    When they are identical the second tag is dropped (it names the same image); when not, it is
    kept so the two can be inspected."""
    store = store or ContentStore()
    builds = []
    for number, name in enumerate((tag, second_tag(tag)), start=1):
        progress(f"reproducibility check: build {number} of 2, without cache")
        builds.append(
            build_image(
                lock,
                engine=engine,
                lock_digest=lock_digest,
                project_dir=project_dir,
                tag=name,
                no_cache=True,
                store=store,
                progress=progress,
                mlenv_version=mlenv_version,
                platform=platform,
            )
        )
    progress("compare the two builds layer by layer")
    report = compare_daemon_images(engine, builds[0].tag, builds[1].tag)
    if report.identical:
        engine.remove_image(builds[1].tag)
    return builds[0], report
