"""`mlenv build` of examples/fraud-detector: a clean build, then a rebuild after editing one app source file.

Targets (issues 5, 13 and 18): rebuild / clean time <= 0.10, the rebuild's self-verify included, with
every layer below the app layer reused (their diff_ids equal in both images); and the final image smaller
than the seed's single-stage Dockerfile. The rebuild reuses the dependency image (found by the digest of
its inputs), sends the engine only the app's tar and a config, and its self-verify reads only the layers
it wrote: the clean build's verify remembered the others for this lock (verify.layermemo). Printed too:
the bytes the rebuild sent to the engine, and the engine's disk (images and build cache) after the clean
build, against before it.

Conditions: the artifact cache is warm for both builds (`mlenv dockerfile -o` fetches every wheel and .deb
first), so the clean build measures the build, not PyPI; the clean build passes --no-cache; the rebuild is a
user's second build. Both are `mlenv build` end to end (render, docker build of the dependency stages with
the network off and their config normalised, or the dependency image reused; the final layers loaded;
verification). One more rebuild kind, after another edit, shows where a rebuild's time goes
(--no-verify); the two kinds alternate, REPEATS rounds.

The anchor (ANCHOR_DOCKERFILE below) is the single-stage Dockerfile an ML engineer writes for this app. pip
inside a build cannot reach PyPI on this machine, so it installs from the same pre-fetched wheels, shipped
in the context as a vendored wheels/ directory and brought in by its `COPY . .`; its size is also shown
without those wheels, as if pip had fetched them from PyPI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import docker
from _common import (
    TAG_PREFIX,
    Stack,
    copy_example,
    diff_ids,
    image_size,
    infrastructure,
    load_note,
    lock_prefix,
    median,
    mib,
    mlenv,
    print_table,
    report_check,
    report_ratio,
    torch_project,
    train_fraud_model,
)

from mlenv.render import WHEELS_DIR
from tools.localbase.multiarch import make_index_image

# The seed's single-stage Dockerfile for the same app, FROM the same base image (the anchor for size).
ANCHOR_DOCKERFILE = """\
FROM {base}
RUN apt-get update && apt-get install -y libgomp1 curl
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY . .
RUN pip install --no-index --find-links wheels -r requirements.txt
EXPOSE 8000
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
"""
APP_SOURCE = "app/main.py"
APP_FILE_IN_IMAGE = "app/app/main.py"  # workdir /app, app.copy = ["app"]
TAGS = {name: f"{TAG_PREFIX}fraud-detector:{name}" for name in ("clean", "rebuild", "no-verify", "anchor")}


def edit_app(project: Path, number: int) -> None:
    """A real edit of one app source file: a new module-level constant, as a small feature change adds."""
    source = project / APP_SOURCE
    source.write_text(source.read_text() + f"\nBENCH_EDIT = {number}\n")


SENT = re.compile(r"load the final layers and config \(([0-9.]+) MB sent to the engine\)")


def build(project: Path, tag: str, *options: str) -> tuple[float, float]:
    """Seconds, and the MB of final layers the build sent to the engine."""
    seconds, done = mlenv("build", str(project), "--tag", tag, *options)
    sent = SENT.search(done.stderr)
    return seconds, float(sent.group(1)) if sent else float("nan")


def engine_disk(infra: Stack) -> int:
    """Bytes of the engine's images (layers shared counted once) and build cache."""
    usage = infra.daemon.client.df()
    return int(usage.get("LayersSize") or 0) + sum(
        int(c.get("Size") or 0) for c in usage.get("BuildCache") or []
    )


def layer_holding(infra: Stack, tag: str, path: str, work: Path) -> int | None:
    """Index (from the bottom) of the image layer that adds `path`, read from a `docker save` of the image."""
    archive = work / "image.tar"
    with archive.open("wb") as out:
        for chunk in infra.daemon.client.images.get(tag).save():
            out.write(chunk)
    try:
        with tarfile.open(archive) as outer:
            manifest = json.loads(outer.extractfile("manifest.json").read())  # type: ignore[union-attr]
            for index, member in enumerate(manifest[0]["Layers"]):
                with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                    if any(name.lstrip("./") == path for name in layer.getnames()):
                        return index
        return None
    finally:
        archive.unlink()


def anchor_image(infra: Stack, project: Path, context_with_wheels: Path, work: Path) -> tuple[float, int]:
    """Build the anchor (no cache) and return its build seconds and the bytes of its vendored wheels."""
    context = work / "anchor"
    shutil.copytree(
        project, context, ignore=shutil.ignore_patterns("mlenv.lock", "mlenv.toml", "__pycache__")
    )
    shutil.copytree(context_with_wheels / WHEELS_DIR, context / "wheels")
    (context / "Dockerfile").write_text(ANCHOR_DOCKERFILE.format(base=infra.base.ref))
    wheels = sum(path.stat().st_size for path in (context / "wheels").iterdir())
    start = time.perf_counter()
    for chunk in infra.daemon.client.api.build(
        path=str(context), tag=TAGS["anchor"], rm=True, forcerm=True, nocache=True, pull=False, decode=True
    ):
        if "error" in chunk:
            raise RuntimeError(f"the anchor build failed: {chunk['error'].strip()}")
    return time.perf_counter() - start, wheels


def torch_service(infra: Stack, repeats: int) -> int:
    """The torch CUDA service (bench/_common.py TORCH_EXTRAS): the clean build is made once and kept with
    its time and the disk it left (it fetches about 3 GB of wheels and installs 5 GB); each run then times
    rebuilds after app edits against it."""
    project = torch_project(infra)
    tag = f"{TAG_PREFIX}torch:{lock_prefix(project / 'mlenv.lock')}"
    record = project.parent / "clean-build.json"
    try:
        infra.daemon.client.images.get(tag)
        clean = json.loads(record.read_text())
    except (docker.errors.ImageNotFound, OSError, ValueError):
        before = engine_disk(infra)
        seconds, _ = build(project, tag, "--no-cache")
        clean = {"seconds": seconds, "disk_before": before, "disk_after": engine_disk(infra)}
        record.write_text(json.dumps(clean))
    runs, sent = [], []
    for number in range(repeats):
        edit_app(project, 1000 + number)
        seconds, megabytes = build(project, f"{TAG_PREFIX}torch:rebuild")
        runs.append(seconds)
        sent.append(megabytes)
    print(f"  rebuilds: {', '.join(f'{t:.2f}' for t in runs)} s", flush=True)
    rebuild = median(runs)
    print_table(
        "torch CUDA service",
        [
            ("image size", mib(image_size(infra.daemon, tag))),
            ("mlenv build --no-cache (clean, made once and kept)", f"{clean['seconds']:7.2f} s"),
            (f"mlenv build after editing {APP_SOURCE} (median)", f"{rebuild:7.2f} s"),
            ("MB sent to the engine by a rebuild (median)", f"{median(sent):.2f}"),
            ("engine disk left by the clean build", mib(clean["disk_after"] - clean["disk_before"])),
        ],
    )
    print("\nratios")
    report_ratio("torch rebuild / clean", rebuild / clean["seconds"], at_most=0.10)
    print(f"\nafter: {load_note()}")
    return 0


def two_platforms(infra: Stack) -> int:
    """The fraud detector locked for both platforms on the two-platform base, and each platform's clean
    build (--no-cache, verify included) timed on this x86-64 engine: arm64's steps run under qemu."""
    base = make_index_image(infra.registry, "python")
    with tempfile.TemporaryDirectory(prefix="mlenv-bench-arm64-") as scratch:
        work = Path(scratch)
        project = copy_example(
            "fraud-detector", work, base={"image": base.ref, "platforms": ["linux/amd64", "linux/arm64"]}
        )
        train_fraud_model(project)
        lock_seconds, _ = mlenv("lock", str(project))
        warm_seconds, _ = mlenv("build", str(project), "--tag", f"{TAG_PREFIX}fraud-multi:warm")
        print(
            f"locked in {lock_seconds:.1f} s; first build (artifacts fetched) {warm_seconds:.1f} s;",
            load_note(),
        )
        times = {}
        for platform in ("linux/amd64", "linux/arm64"):
            tag = f"{TAG_PREFIX}fraud-multi:{platform.rpartition('/')[2]}"
            times[platform], _ = mlenv(
                "build", str(project), "--tag", tag, "--platform", platform, "--no-cache"
            )
    print_table(
        "seconds: mlenv build --no-cache --platform P (verify included)",
        [(platform, f"{seconds:7.2f}") for platform, seconds in times.items()],
    )
    # No target: the issue asks for the two times side by side; the ratio is the emulation's cost.
    print(f"\narm64 (emulated) / amd64 (native): {times['linux/arm64'] / times['linux/amd64']:.2f}x")
    print(f"after: {load_note()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rebuilds of each kind (medians are shown)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {TAG_PREFIX}fraud-detector:* images")
    parser.add_argument("--torch", action="store_true", help="the torch CUDA service (built once, kept)")
    parser.add_argument(
        "--arm64",
        action="store_true",
        help="a lock for linux/amd64 and linux/arm64: each platform's clean build",
    )
    args = parser.parse_args()
    if args.torch:
        with infrastructure() as infra:
            return torch_service(infra, args.repeats)
    if args.arm64:
        with infrastructure() as infra:
            return two_platforms(infra)
    with infrastructure() as infra, tempfile.TemporaryDirectory(prefix="mlenv-bench-build-") as scratch:
        work = Path(scratch)
        project = copy_example("fraud-detector", work, base={"image": infra.base.ref})
        train_fraud_model(project)
        lock_seconds, _ = mlenv("lock", str(project))
        warm_seconds, _ = mlenv("dockerfile", str(project), "-o", str(work / "context"))
        print(
            f"locked in {lock_seconds:.1f} s; artifact cache warmed in {warm_seconds:.1f} s; {load_note()}",
            flush=True,
        )
        disk_before = engine_disk(infra)
        clean, _ = build(project, TAGS["clean"], "--no-cache")
        disk_after = engine_disk(infra)
        variants = {"rebuild": (), "no-verify": ("--no-verify",)}
        runs: dict[str, list[float]] = {name: [] for name in variants}
        sent: list[float] = []
        edits = itertools.count(1)
        for _ in range(args.repeats):  # rounds of the two kinds, each after its own edit of the app
            for name, options in variants.items():
                edit_app(project, next(edits))
                seconds, megabytes = build(project, TAGS[name], *options)
                runs[name].append(seconds)
                sent.append(megabytes)
        for name, times in runs.items():
            print(f"  {name}: {', '.join(f'{t:.2f}' for t in times)} s", flush=True)
        rebuild, no_verify = (median(runs[name]) for name in variants)
        start_up = median([mlenv("--version")[0] for _ in range(args.repeats)])
        before, after = diff_ids(infra.daemon, TAGS["clean"]), diff_ids(infra.daemon, TAGS["rebuild"])
        app_layer = layer_holding(infra, TAGS["rebuild"], APP_FILE_IN_IMAGE, work)
        anchor_seconds, wheel_bytes = anchor_image(infra, project, work / "context", work)
        ours, anchor = image_size(infra.daemon, TAGS["clean"]), image_size(infra.daemon, TAGS["anchor"])
        if not args.keep:
            for tag in TAGS.values():
                try:
                    infra.daemon.client.images.remove(tag)
                except docker.errors.APIError as error:  # in use by another session's container: leave it
                    print(f"  note: {tag} not removed: {error}")

    print_table(
        f"seconds (rebuilds: median of {args.repeats})",
        [
            ("mlenv build --no-cache (clean)", f"{clean:7.2f}"),
            ("mlenv build after editing app/main.py", f"{rebuild:7.2f}"),
            ("  the same, --no-verify", f"{no_verify:7.2f}"),
            ("  mlenv start-up alone (mlenv --version)", f"{start_up:7.2f}"),
            ("anchor single-stage build (no cache)", f"{anchor_seconds:7.2f}"),
        ],
    )
    same_below = app_layer is not None and before[:app_layer] == after[:app_layer]
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
    print_table(
        "layers",
        [
            ("layers (clean, rebuild)", f"{len(before)}, {len(after)}"),
            ("the app layer (from the bottom)", f"{app_layer}" if app_layer is not None else "NOT FOUND"),
            ("layers that differ", ", ".join(map(str, changed)) or "none"),
            ("every layer below the app layer reused", "yes" if same_below else "NO"),
        ],
    )
    print_table(
        "image size",
        [
            ("mlenv build", mib(ours)),
            ("anchor single-stage", mib(anchor)),
            ("anchor without its vendored wheels", mib(anchor - wheel_bytes)),
        ],
    )
    print_table(
        "engine and disk",
        [
            ("MB sent to the engine by a rebuild (median)", f"{median(sent):.2f}"),
            ("engine disk before the clean build", mib(disk_before)),
            ("engine disk after it (images and build cache)", mib(disk_after)),
            ("  left by the clean build", mib(disk_after - disk_before)),
        ],
    )
    print("\nratios")
    report_ratio("rebuild / clean", rebuild / clean, at_most=0.10)
    report_ratio("rebuild / clean, --no-verify", no_verify / clean, at_most=0.10)
    report_check("every layer below the app layer reused", same_below)
    report_ratio("mlenv image / anchor image", ours / anchor, at_most=1.0)
    report_ratio("mlenv image / anchor without wheels", ours / (anchor - wheel_bytes), at_most=1.0)
    print(f"\nafter: {load_note()}; other sessions share this machine, so times are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
