"""`mlenv verify` of an image of more than 1 GB vs decompress-only of its layers, and vs running the image.

Target (issue 6): verify time / decompress-only time <= 1.3. `mlenv verify` is timed as CI runs it: the
CLI in a new process (interpreter start-up included), on the OCI layout with gzip layers, anchored on
`gzip -dc LAYER > /dev/null` per layer; docker-archive: (anchored on `cat ARCHIVE`) and docker-daemon:
(anchored on `docker save`) are shown too. For reference only, the container way of listing the same
facts: `docker run IMAGE sh -c 'pip list; dpkg-query -W'` (pip from the base, pointed at the venv, since
the venv is built without pip) — which reads far less (no file hashes) and trusts the image's own tools.

The image and its lock are shared with bench/observe.py (see _common.big_image). Page cache warm; verify
and its anchor alternate.
"""

from __future__ import annotations

import argparse
import sys

from _common import (
    alternate,
    big_image,
    decompress_only,
    docker_save_only,
    hash_only,
    infrastructure,
    load_note,
    median,
    mib,
    mlenv,
    print_table,
    report_ratio,
    run,
    warm_page_cache,
)

# The venv holds no pip (mlenv removes it), so the base's own pip (/usr/bin/python3: on PATH, python3 is the
# venv's) lists the venv; --network none, as nothing needs reaching; set -e, so a failed listing shows.
LIST_IN_CONTAINER = "set -e; /usr/bin/python3 -m pip --python /opt/venv/bin/python list; dpkg-query -W"


def verify_cli(reference: str, lock: str) -> float:
    seconds, result = mlenv("verify", reference, "--lock", lock, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        print(f"  WARNING: mlenv verify {reference} exited {result.returncode}: {' | '.join(tail)}")
    return seconds


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
    args = parser.parse_args()
    with infrastructure() as infra:
        image = big_image(infra)
    lock = str(image.lock)
    layers = image.oci_layers()
    warm_page_cache([*layers, image.archive])
    print(f"{image.tag}: {mib(image.uncompressed)} uncompressed in {len(layers)} layers; lock {lock}")
    print(f"before: {load_note()}", flush=True)
    oci = alternate(
        lambda: verify_cli(f"oci:{image.oci}", lock), lambda: decompress_only(layers), args.repeats
    )
    archive = alternate(
        lambda: verify_cli(f"docker-archive:{image.archive}", lock),
        lambda: decompress_only([image.archive]),
        args.repeats,
    )
    hashed = median([hash_only(image.archive) for _ in range(args.repeats)])
    daemon = alternate(
        lambda: verify_cli(f"docker-daemon:{image.tag}", lock),
        lambda: docker_save_only(image.tag),
        args.repeats,
    )
    docker_run_listing(image.tag)  # the first run pays for creating the container's layer; not timed
    in_container = median([docker_run_listing(image.tag) for _ in range(args.repeats)])
    start_up = median([mlenv("--version")[0] for _ in range(args.repeats)])
    print_table(
        f"seconds, median of {args.repeats} (page cache warm)",
        [
            ("mlenv verify oci:", f"{oci[0]:7.2f}"),
            ("  of which mlenv start-up (mlenv --version)", f"{start_up:7.2f}"),
            ("gzip -dc each layer > /dev/null", f"{oci[1]:7.2f}"),
            ("mlenv verify docker-archive:", f"{archive[0]:7.2f}"),
            ("cat the archive > /dev/null", f"{archive[1]:7.2f}"),
            ("sha256sum the archive (reference)", f"{hashed:7.2f}"),
            ("mlenv verify docker-daemon:", f"{daemon[0]:7.2f}"),
            ("docker save > /dev/null", f"{daemon[1]:7.2f}"),
            ("docker run: pip list; dpkg-query -W", f"{in_container:7.2f}"),
        ],
    )
    print("\nratios")
    report_ratio("verify oci: / gzip -dc", oci[0] / oci[1], at_most=1.3)
    report_ratio("verify docker-archive: / cat", archive[0] / archive[1], at_most=1.3)
    print(f"  {'verify docker-archive: / sha256sum (ref.)':<44} {archive[0] / hashed:8.3f}")
    report_ratio("verify docker-daemon: / docker save", daemon[0] / daemon[1], at_most=1.3)
    print(f"  {'verify oci: / docker run listing (ref.)':<44} {oci[0] / in_container:8.3f}")
    print(f"\nafter: {load_note()}; other sessions share this machine, so times are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
