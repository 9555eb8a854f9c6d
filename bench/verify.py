"""`mlenv verify` of the fraud image vs only streaming it out of the engine, or decompressing its layers.

Targets (issue 13): through docker-daemon:, verify time / `docker save > /dev/null` <= 1.3; through oci:
(gzip layers), verify time / `gzip -dc LAYER > /dev/null` per layer <= 1.3. `mlenv verify` is timed as CI
runs it: the CLI in a new process (interpreter start-up included), and every file of every layer above
the base is accounted for. Each transport is timed twice: "first read", with the memory of layers
(verify.layermemo) emptied before every run, so every layer is parsed; and "remembered", the same image
verified again, its layers only hashed. docker-archive: (anchored on `cat ARCHIVE`) is shown too, and
each verify's peak memory (the child's ru_maxrss). For reference only, the container way of listing the
same facts: `docker run IMAGE sh -c 'pip list; dpkg-query -W'`, which reads far less (no file hashes) and
trusts the image's own tools. `--big` takes the fraud detector with heavy extras (bench/observe.py's);
`--torch` the torch CUDA service of bench/_common.py (over 5 GB, built once and kept).

Page cache warm; verify and its anchor alternate; the derived-wheel cache is warm (a second verify).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from _common import (
    PEAK_KIB,
    alternate,
    big_image,
    decompress_only,
    docker_save_only,
    fraud_image,
    hash_only,
    infrastructure,
    load_note,
    median,
    mib,
    mlenv,
    print_table,
    report_ratio,
    run,
    torch_image,
    warm_page_cache,
)

from mlenv.verify.layermemo import LayerMemo

# The venv holds no pip (mlenv removes it), so the base's own pip (/usr/bin/python3: on PATH, python3 is the
# venv's) lists the venv; --network none, as nothing needs reaching; set -e, so a failed listing shows.
LIST_IN_CONTAINER = "set -e; /usr/bin/python3 -m pip --python /opt/venv/bin/python list; dpkg-query -W"


PEAKS: dict[str, list[int]] = {}
WARNED: set[str] = set()


def verify_cli(reference: str, lock: str, *, remembered: bool, label: str) -> float:
    if not remembered:
        shutil.rmtree(LayerMemo().root, ignore_errors=True)  # every layer is parsed, as at a first verify
    seconds, result = mlenv("verify", reference, "--lock", lock, check=False)
    PEAKS.setdefault(label, []).append(PEAK_KIB[-1])
    if result.returncode != 0 and reference not in WARNED:
        # Once per image: skopeo's OCI copy drops the Healthcheck (the OCI config has no such field),
        # which verify reports as the config drift it is; the layers are read all the same.
        WARNED.add(reference)
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        print(f"  WARNING: mlenv verify {reference} exited {result.returncode}: {' | '.join(tail)}")
    return seconds


def peak(label: str) -> str:
    return f"{max(PEAKS[label]) / 1024:7.0f} MiB peak"


def save_first_byte(tag: str) -> tuple[float, float]:
    """(seconds until `docker save` writes its first byte, seconds from it to the end): dockerd 20.10
    exports the whole image to a temporary directory before it sends anything, so the first part is a
    floor under any reader of the engine's stream, verify included."""
    start = time.perf_counter()
    with subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        process.stdout.read(1)
        first = time.perf_counter()
        while process.stdout.read(1 << 20):
            pass
    if process.returncode != 0:
        raise RuntimeError(f"docker save {tag} exited {process.returncode}")
    return first - start, time.perf_counter() - first


def docker_run_listing(tag: str) -> float:
    seconds, result = run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", LIST_IN_CONTAINER],
        check=False,
    )
    if result.returncode != 0:
        print(f"  WARNING: docker run exited {result.returncode}: {result.stderr.strip()[-300:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side per transport")
    parser.add_argument("--big", action="store_true", help="the fraud detector with heavy extras")
    parser.add_argument("--torch", action="store_true", help="the torch CUDA service (over 5 GB)")
    args = parser.parse_args()
    with infrastructure() as infra:
        image = torch_image(infra) if args.torch else big_image(infra) if args.big else fraud_image(infra)
        # Inside the block: DOCKER_HOST names the engine only while it is held.
        lock = str(image.lock)
        layers = image.oci_layers()
        warm_page_cache([*layers, image.archive])
        print(f"{image.tag}: {mib(image.uncompressed)} uncompressed in {len(layers)} layers; lock {lock}")
        print(f"before: {load_note()}", flush=True)
        verify_cli(f"docker-daemon:{image.tag}", lock, remembered=False, label="warm-up")  # derived caches
        rows: list[tuple[str, str]] = []
        ratios: list[tuple[str, float]] = []
        sides = [
            ("oci:", f"oci:{image.oci}", "gzip -dc each layer > /dev/null", lambda: decompress_only(layers)),
            (
                "docker-archive:",
                f"docker-archive:{image.archive}",
                "cat the archive > /dev/null",
                lambda: decompress_only([image.archive]),
            ),
            (
                "docker-daemon:",
                f"docker-daemon:{image.tag}",
                "docker save > /dev/null",
                lambda: docker_save_only(image.tag),
            ),
        ]
        for name, reference, anchor_name, anchor in sides:
            anchors = []
            for remembered in (False, True):
                label = f"{name} {'remembered' if remembered else 'first read'}"
                if remembered:
                    verify_cli(reference, lock, remembered=False, label="warm-up")  # fills the memory
                measured, anchored = alternate(
                    lambda reference=reference, remembered=remembered, label=label: verify_cli(
                        reference, lock, remembered=remembered, label=label
                    ),
                    anchor,
                    args.repeats,
                )
                anchors.append(anchored)
                rows.append((f"mlenv verify {label}", f"{measured:7.2f}   {peak(label)}"))
                ratios.append((f"verify {label} / {anchor_name.split(' ')[0]}", measured / anchored))
            rows.append((anchor_name, f"{median(anchors):7.2f}"))
        waits = [save_first_byte(image.tag) for _ in range(args.repeats)]
        hashed = median([hash_only(image.archive) for _ in range(args.repeats)])
        docker_run_listing(image.tag)  # the first run pays for creating the container's layer; not timed
        in_container = median([docker_run_listing(image.tag) for _ in range(args.repeats)])
        start_up = median([mlenv("--version")[0] for _ in range(args.repeats)])
        rows += [
            ("docker save: until its first byte", f"{median([w for w, _ in waits]):7.2f}"),
            ("docker save: from it to the end", f"{median([r for _, r in waits]):7.2f}"),
            ("mlenv start-up (mlenv --version)", f"{start_up:7.2f}"),
            ("sha256sum the archive (reference)", f"{hashed:7.2f}"),
            ("docker run: pip list; dpkg-query -W (ref.)", f"{in_container:7.2f}"),
        ]
        print_table(f"seconds, median of {args.repeats} (page cache warm)", rows)
        print("\nratios")
        for label, value in ratios:
            if label.startswith(("verify oci:", "verify docker-daemon:")):
                report_ratio(label, value, at_most=1.3)
            else:
                print(f"  {label:<44} {value:8.3f}")
    print(f"\nafter: {load_note()}; other sessions share this machine, so times are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
