"""What the benchmarks share: the engine, a loopback registry, the test base image, timing and reporting.

The infrastructure is the one the tests and the demo stand on (tools/localbase): the same debootstrap base
image, cached between runs, served from a registry on 127.0.0.1. Benchmarks report and never fail on a
missed target: every script exits 0 and prints MISSED next to a ratio that missed.

Run from the repository: `python bench/NAME.py [--repeats N]`. DOCKER_HOST names the engine; without it one
is started as the tests start it (root). The first observe/verify run builds the big image (minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import docker
import tomlkit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # a benchmark runs as `python bench/NAME.py`: tools/ is beside bench/

from tools.localbase.bytecode import compile_mlenv  # noqa: E402 - needs the path above
from tools.localbase.cache import cache_dir, cache_lock  # noqa: E402
from tools.localbase.dockerd import Daemon  # noqa: E402
from tools.localbase.images import push_image, save_forms  # noqa: E402
from tools.localbase.project import copy_example, train_fraud_model  # noqa: E402
from tools.localbase.stack import Stack, local_stack  # noqa: E402
from tools.localbase.ubuntu import UbuntuServed, served_ubuntu, ubuntu_base_context  # noqa: E402

__all__ = ["Stack", "copy_example", "train_fraud_model"]  # the benchmarks take these from here

T = TypeVar("T")
TAG_PREFIX = "mlenv-bench/"  # every image a benchmark makes is tagged under here, nothing else is touched


# --------------------------------------------------------------------------- timing and reporting


def timed(action: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


PEAK_KIB: list[int] = []  # ru_maxrss of each command `run` waited for, in KiB, last one last


def _run_measured(
    command: Sequence[str], cwd: Path | None, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    """subprocess.run, but reaped with wait4 so the child's own peak memory is known (getrusage of
    RUSAGE_CHILDREN is the largest of all children so far, not this one's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        PEAK_KIB.append(usage.ru_maxrss)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            list(command),
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def run(
    command: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command with its output captured; the wall time includes its start-up, as a user sees it
    (an mlenv command's with its byte code compiled, as installed)."""
    compile_mlenv()
    seconds, result = timed(lambda: _run_measured(command, cwd, env))
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {' | '.join(tail)}")
    return seconds, result


def mlenv(
    *args: str, cwd: Path | None = None, check: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """The CLI in its own process, as a user runs it."""
    return run([sys.executable, "-m", "mlenv", *args], cwd=cwd, check=check)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def report_ratio(
    name: str, value: float, *, at_most: float | None = None, at_least: float | None = None
) -> None:
    """One line: the ratio, its target, and whether it was hit (MISSED in capitals when not)."""
    if at_most is not None:
        target, hit = f"target <= {at_most:g}", value <= at_most
    elif at_least is not None:
        target, hit = f"target >= {at_least:g}", value >= at_least
    else:
        raise ValueError("a ratio needs a target")
    print(f"  {name:<44} {value:8.3f}   {target:<14} {'hit' if hit else 'MISSED'}")


def report_check(name: str, ok: bool) -> None:
    print(f"  {name:<44} {'yes' if ok else 'no':>8}   {'target: yes':<14} {'hit' if ok else 'MISSED'}")


def load_note() -> str:
    """The machine's load when the numbers were taken: they are only comparable within one run."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


# --------------------------------------------------------------------------- decompress-only anchor


def decompressor(blob: Path) -> list[str]:
    """The standard tool that only decompresses `blob` (by its magic number), or `cat` when it is plain."""
    with blob.open("rb") as file:
        head = file.read(4)
    if head.startswith(b"\x1f\x8b"):
        return ["gzip", "-dc", str(blob)]
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return ["zstd", "-dcq", str(blob)]
    return ["cat", str(blob)]


def decompress_only(blobs: Sequence[Path]) -> float:
    """Seconds to decompress every layer once into /dev/null, one layer after another as the observer does."""
    total = 0.0
    with open(os.devnull, "wb") as sink:
        for blob in blobs:
            command = decompressor(blob)
            seconds, result = timed(lambda command=command: subprocess.run(command, stdout=sink, check=False))
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} exited {result.returncode}")
            total += seconds
    return total


def hash_only(path: Path) -> float:
    """Seconds for `sha256sum PATH`: the least any reader that checks layer digests does with plain layers."""
    seconds, _ = run(["sha256sum", str(path)])
    return seconds


def docker_save_only(tag: str) -> float:
    """Seconds for the engine to stream the image out (`docker save IMAGE > /dev/null`)."""
    with open(os.devnull, "wb") as sink:
        seconds, result = timed(lambda: subprocess.run(["docker", "save", tag], stdout=sink, check=False))
    if result.returncode != 0:
        raise RuntimeError(f"docker save {tag} exited {result.returncode}")
    return seconds


def alternate(
    measured: Callable[[], float], anchor: Callable[[], float], repeats: int
) -> tuple[float, float]:
    """Medians of `repeats` alternating runs (anchor first), so a change in the machine's load hits both."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[1].append(anchor())
        times[0].append(measured())
    return median(times[0]), median(times[1])


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Read the files once, so every measurement after this starts from the same warm page cache."""
    with open(os.devnull, "wb") as sink:
        for path in paths:
            subprocess.run(["cat", str(path)], stdout=sink, check=True)


# --------------------------------------------------------------------------- engine, registry, base image


@contextmanager
def infrastructure() -> Iterator[Stack]:
    """Attach to the engine DOCKER_HOST names (or start one as the tests do), serve a loopback registry,
    push the cached test base image; the registry (and an engine started here) stop on exit."""
    with tempfile.TemporaryDirectory(prefix="mlenv-bench-registry-") as registry_dir:
        with local_stack(Path(registry_dir), timeout=1800) as stack:
            yield stack


def bench_dir(*parts: str) -> Path:
    """Kept between runs (beside the tests' cache): projects, locks and image forms that are slow to make."""
    return cache_dir("bench", *parts)


def image_size(daemon: Daemon, tag: str) -> int:
    return int(daemon.client.images.get(tag).attrs["Size"])


def diff_ids(daemon: Daemon, tag: str) -> list[str]:
    return list(daemon.client.images.get(tag).attrs["RootFS"]["Layers"])


def lock_prefix(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:12]


# --------------------------------------------------------------------------- a big image, built by mlenv


# The seed's fraud detector plus heavy CPU-only packages (no torch): real wheels, tens of thousands of
# files (plotly's validators, sympy, pyarrow headers, catboost and opencv shared objects), well over 1 GB.
BIG_EXTRAS = (
    "pyarrow",
    "polars",
    "duckdb",
    "sympy",
    "plotly",
    "opencv-python-headless",
    "catboost",
    "matplotlib",
    "transformers",
    "statsmodels",
)
BIG_RECIPE = "b1"  # change when BIG_EXTRAS changes, so a cached project is never reused for another recipe


@dataclass(frozen=True)
class BigImage:
    project: Path
    lock: Path
    tag: str
    archive: Path  # `docker save` tar: uncompressed layers
    oci: Path  # OCI layout written by skopeo: gzip layers
    uncompressed: int  # bytes of all layers, uncompressed

    def oci_layers(self) -> list[Path]:
        index = json.loads((self.oci / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"]
        manifest = json.loads(self._blob(manifest_digest).read_text())
        return [self._blob(layer["digest"]) for layer in manifest["layers"]]

    def _blob(self, digest: str) -> Path:
        algorithm, _, hex_digest = digest.partition(":")
        return self.oci / "blobs" / algorithm / hex_digest


def big_image(infra: Stack, progress: Callable[[str], None] = print) -> BigImage:
    """The fraud detector with heavy extras, locked and built by `mlenv build` once and then reused."""
    return _kept_image(infra, "big", BIG_RECIPE, BIG_EXTRAS, progress)


FRAUD_RECIPE = "f1"


def fraud_image(infra: Stack, progress: Callable[[str], None] = print) -> BigImage:
    """The seed's fraud detector as it is (the image the tests verify), built once and then reused."""
    return _kept_image(infra, "fraud", FRAUD_RECIPE, (), progress)


# A torch CUDA service on the fraud detector: PyPI's torch 2.3.1 is the cu121 build, with its nvidia-*
# wheels (cuDNN, cuBLAS, NCCL, ...), and the Hugging Face stack; apt brings libsndfile1 and ffmpeg. Over 5 GB.
TORCH_EXTRAS = (
    "torch==2.3.1",
    "transformers==4.41.2",
    "accelerate==0.31.0",
    "sentencepiece==0.2.0",
)
# The torch service runs on an Ubuntu 22.04-style base with NVIDIA's repository in its sources, as the
# nvidia/cuda images do (tools/localbase/ubuntu.py: real bookworm .debs in Ubuntu's and NVIDIA's layouts,
# signed with keys made for the bench and served on 127.0.0.1 while it locks and fetches).
TORCH_RECIPE = "u1"
TORCH_APT = ("libgomp1", "curl", "libsndfile1", "ffmpeg")
# What the service takes from NVIDIA's repository: on a GPU host that is cuda-compat-12-1; the bench's
# NVIDIA-layout repository serves a real small .deb in its place.
TORCH_FROM_NVIDIA = "figlet"
# A day after the test archives' Releases (their Date); Ubuntu's snapshot service cannot be reached.
TORCH_AS_OF = "2024-10-02T00:00:00Z"


def _torch_spec(project: Path, *, base: str, mirror: str) -> None:
    spec = (project / "mlenv.toml").read_text()
    replacements = {
        'version = "none"': 'version = "12.1"',
        'packages = ["libgomp1", "curl"]': (
            f"packages = {json.dumps([*TORCH_APT, TORCH_FROM_NVIDIA])}\nmirror = {json.dumps(mirror)}"
        ),
        "as-of = 2024-07-01T00:00:00Z": f"as-of = {TORCH_AS_OF}",
    }
    for old, new in replacements.items():
        if spec.count(old) != 1:
            raise RuntimeError(f"the example's mlenv.toml changed: {old!r} is not there once")
        spec = spec.replace(old, new)
    spec = spec.replace(f'image = "{_example_base(spec)}"', f'image = "{base}"')
    (project / "mlenv.toml").write_text(spec)


def _example_base(spec: str) -> str:
    return tomlkit.parse(spec)["base"]["image"]  # type: ignore[index,return-value]


def torch_image(infra: Stack, progress: Callable[[str], None] = print) -> BigImage:
    """The torch CUDA service, locked and built once (about 3 GB of wheels the first time), then reused."""
    torch_project(infra, progress)
    return _kept_image(infra, "torch", TORCH_RECIPE, TORCH_EXTRAS, progress)


def torch_project(infra: Stack, progress: Callable[[str], None] = print) -> Path:
    """The torch service on the Ubuntu-style base, locked once and kept; every artifact it pins is fetched
    into the content store while the archives are served (later runs find them there by sha256)."""
    project = bench_dir(f"torch-{TORCH_RECIPE}") / "fraud-detector"
    with cache_lock(f"bench-torch-{TORCH_RECIPE}-project"):
        if (project / "mlenv.lock").exists():
            return project
        closure = _debian_closure(infra, TORCH_APT)
        with tempfile.TemporaryDirectory(prefix="mlenv-bench-ubuntu-") as scratch:
            work = Path(scratch)
            # Ubuntu's sources.list names all three pockets: each has its (here empty) indexes.
            layout = {"jammy": {"main": closure}, "jammy-updates": {}, "jammy-security": {}}
            with served_ubuntu(work / "archive", layout, (TORCH_FROM_NVIDIA,)) as served:
                base = _ubuntu_base(infra, served, work / "base")
                previous = os.environ.get("MLENV_SNAPSHOT_URL")
                # Nothing listens on port 1: the lock says at once that Ubuntu's pockets came from the mirror.
                os.environ["MLENV_SNAPSHOT_URL"] = "http://127.0.0.1:1/archive"
                try:
                    kept_project(
                        infra,
                        "torch",
                        TORCH_RECIPE,
                        TORCH_EXTRAS,
                        progress,
                        edit_spec=lambda p: _torch_spec(p, base=base, mirror=served.mirror),
                    )
                finally:
                    if previous is None:
                        os.environ.pop("MLENV_SNAPSHOT_URL")
                    else:
                        os.environ["MLENV_SNAPSHOT_URL"] = previous
                progress("fetching every artifact the torch lock pins into the content store")
                mlenv("dockerfile", str(project), "-o", str(work / "context"))
    return project


def _debian_closure(infra: Stack, packages: Sequence[str]) -> tuple[str, ...]:
    """The apt closure of `packages` on the python test base, as `mlenv lock` resolves it from Debian: the
    Ubuntu-layout archive serves exactly these .debs (so the service's closure resolves there too)."""
    with tempfile.TemporaryDirectory(prefix="mlenv-bench-closure-") as scratch:
        project = Path(scratch)
        quoted = json.dumps(list(packages))
        (project / "mlenv.toml").write_text(
            f'name = "closure"\nas-of = {TORCH_AS_OF}\n[base]\nimage = "{infra.base.ref}"\n'
            f'platforms = ["linux/amd64"]\n[python]\nrequirements = []\n[apt]\npackages = {quoted}\n'
            '[cuda]\nversion = "none"\n'
        )
        mlenv("lock", str(project))
        lock = tomlkit.parse((project / "mlenv.lock").read_text())
        return tuple(sorted(str(pin["name"]) for pin in lock["apt"]["packages"]))  # type: ignore[index,union-attr]


def _ubuntu_base(infra: Stack, served: UbuntuServed, context: Path) -> str:
    """The python test base made Ubuntu 22.04-style (its sources name `served`), pushed to the registry."""
    context.mkdir()
    lines = ubuntu_base_context(
        context,
        archive_key=served.archive_key.binary,
        cuda_key=served.cuda_key.binary,
        cuda_uri=served.cuda_uri(),
    )
    (context / "Dockerfile").write_text("\n".join([f"FROM {infra.base.local}", *lines]) + "\n")
    local = f"{TAG_PREFIX}jammy-style:{TORCH_RECIPE}"
    infra.daemon.client.images.build(path=str(context), tag=local, rm=True, forcerm=True, network_mode="none")
    push_image(infra.daemon.client, local, infra.registry.host, "mlenv-bench/jammy-style", TORCH_RECIPE)
    return f"{infra.registry.host}/mlenv-bench/jammy-style:{TORCH_RECIPE}"


def kept_project(
    infra: Stack,
    name: str,
    recipe: str,
    extras: Sequence[str],
    progress: Callable[[str], None],
    *,
    edit_spec: Callable[[Path], None] | None = None,
) -> Path:
    """The fraud detector plus `extras`, locked once and kept (bench_dir/NAME-RECIPE/fraud-detector).

    Its spec names the registry port of the run that made it: later runs build from the dependency image
    (found by its inputs) and verify with the base's config from the content store, so that is enough."""
    root = bench_dir(f"{name}-{recipe}")
    project = root / "fraud-detector"
    if not (project / "mlenv.lock").exists():
        shutil.rmtree(project, ignore_errors=True)
        project = copy_example("fraud-detector", root, base={"image": infra.base.ref})
        requirements = project / "requirements.txt"
        requirements.write_text(requirements.read_text() + "".join(f"{extra}\n" for extra in extras))
        if edit_spec is not None:
            edit_spec(project)
        train_fraud_model(project)
        progress(f"locking the {name} project {project}")
        mlenv("lock", str(project))
    return project


def _kept_image(
    infra: Stack,
    name: str,
    recipe: str,
    extras: Sequence[str],
    progress: Callable[[str], None],
    *,
    edit_spec: Callable[[Path], None] | None = None,
) -> BigImage:
    """The fraud detector plus `extras` (kept_project), built by `mlenv build` once and then reused: later
    runs find the same image by the lock's hash and skip the build; only a new recipe builds again."""
    with cache_lock(f"bench-{name}-{recipe}"):
        project = kept_project(infra, name, recipe, extras, progress, edit_spec=edit_spec)
        lock = project / "mlenv.lock"
        tag = f"{TAG_PREFIX}{name}:{lock_prefix(lock)}"
        try:
            infra.daemon.client.images.get(tag)
        except docker.errors.ImageNotFound:
            progress(f"building {tag} with mlenv build (fetches the wheels the first time)")
            mlenv("build", str(project), "--tag", tag)
        archive, oci = save_forms(infra.daemon.client, tag)
    return BigImage(
        project=project,
        lock=lock,
        tag=tag,
        archive=archive,
        oci=oci,
        uncompressed=archive_layer_bytes(archive),
    )


def archive_layer_bytes(archive: Path) -> int:
    """The uncompressed size of every layer: `docker save` stores each layer as a plain tar member."""
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        return sum(tar.getmember(layer).size for layer in manifest[0]["Layers"])
