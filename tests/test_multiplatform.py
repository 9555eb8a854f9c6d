"""Apple Silicon laptops, x86 production: the fraud detector locked once for linux/amd64 and linux/arm64,
built for both on the real engine (arm64's steps under qemu-user-static), pushed as one index, verified
per platform, and a missing or wrong-architecture platform caught.

The base is an index made here (tools/localbase.multiarch); the arm64 build is the slowest part, so one
module-scoped build serves every test, and the reproducibility check builds once more without cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlenv.build.artifacts import python_artifacts
from mlenv.build.index import push_index
from mlenv.lockfile import read_lock
from mlenv.sources.registry import ImageReference, RegistryClient
from tests.helpers import lock_tag, run_cli
from tests.infra import required
from tools.localbase.dockerd import Daemon
from tools.localbase.multiarch import IndexImage
from tools.localbase.project import copy_example, train_fraud_model
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

PLATFORMS = ("linux/amd64", "linux/arm64")


@dataclass(frozen=True, kw_only=True)
class MultiBuild:
    project: Path
    tag: str  # the index's tag in the registry
    output: dict[str, object]  # `mlenv build --format json`


@pytest.fixture(scope="module")
def multi(
    multiarch_base_image: IndexImage,
    registry: Registry,
    docker_daemon: Daemon,
    tmp_path_factory: pytest.TempPathFactory,
) -> MultiBuild:
    base = {"image": multiarch_base_image.ref, "platforms": list(PLATFORMS)}
    project = copy_example("fraud-detector", tmp_path_factory.mktemp("multi"), base=base)
    with required():
        train_fraud_model(project)
    locked = run_cli("lock", str(project))
    assert locked.code == 0, locked.stderr[-2000:]
    tag = f"{registry.host}/{lock_tag('fraud-multi', project / 'mlenv.lock')}"
    built = run_cli("build", str(project), "--tag", tag, "--push", "--format", "json")
    assert built.code == 0, built.stderr[-3000:]
    return MultiBuild(project=project, tag=tag, output=json.loads(built.stdout))


def test_one_lock_holds_both_platforms_and_arm64_installs_only_aarch64_or_pure_wheels(
    multi: MultiBuild,
) -> None:
    lock = read_lock(multi.project / "mlenv.lock")
    assert lock.target.platforms == PLATFORMS
    assert lock.base is not None
    assert sorted(p.platform for p in lock.base.platforms) == list(PLATFORMS)
    assert len({p.manifest_digest for p in lock.base.platforms}) == 2
    arm = python_artifacts(lock, "linux/arm64")
    amd = python_artifacts(lock, "linux/amd64")
    assert {a.package for a in arm} == {a.package for a in amd} == {p.name for p in lock.python.packages}
    for artifact in arm:
        assert artifact.filename.endswith(("-none-any.whl", "_aarch64.whl")), artifact.filename
    assert any(a.filename.endswith("_aarch64.whl") for a in arm)  # numpy, scikit-learn...
    assert not any("aarch64" in a.filename for a in amd)
    architectures = {p.architecture for p in lock.apt.packages}
    assert {"amd64", "arm64"} <= architectures  # curl's closure, once per platform


def test_both_platforms_are_built_verified_and_pushed_as_one_index(
    multi: MultiBuild, docker_daemon: Daemon
) -> None:
    platforms = multi.output["platforms"]
    assert isinstance(platforms, dict) and sorted(platforms) == list(PLATFORMS)
    assert multi.output["verified"] is True
    index = RegistryClient().get_manifest(ImageReference.parse(multi.tag))
    assert index.digest == multi.output["index-digest"]
    listed = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index.data["manifests"]}
    assert listed == set(PLATFORMS)
    for platform, built in platforms.items():
        image = docker_daemon.client.images.get(built["tag"])
        assert image.id == built["image-id"]
        assert f"{image.attrs['Os']}/{image.attrs['Architecture']}" == platform
    # The issue's own command line, as a user types it.
    shown = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            platforms["linux/arm64"]["tag"],
            "python",
            "-c",
            "import platform; print(platform.machine())",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": docker_daemon.host},
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "aarch64"


def test_verify_checks_every_platform_of_the_index(multi: MultiBuild) -> None:
    result = run_cli("verify", f"docker://{multi.tag}", "--lock", str(multi.project / "mlenv.lock"))
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for platform in PLATFORMS:
        assert f"({platform})" in result.stdout
    as_json = run_cli(
        "verify", f"docker://{multi.tag}", "--lock", str(multi.project / "mlenv.lock"), "--format", "json"
    )
    reports = json.loads(as_json.stdout)
    assert [r["verdict"] for r in reports] == ["match", "match"]


@pytest.mark.parametrize("transport", ["docker://", "docker-daemon:"])
def test_one_platforms_image_is_verified_as_the_lock_entry_of_its_architecture(
    multi: MultiBuild, transport: str
) -> None:
    """A single image (the arm64 tag, in the registry or the engine) with no --platform: its own
    architecture picks the lock's entry, so it matches, instead of drifting as an amd64 image would."""
    platforms = multi.output["platforms"]
    assert isinstance(platforms, dict)
    tag = platforms["linux/arm64"]["tag"]
    result = run_cli("verify", f"{transport}{tag}", "--lock", str(multi.project / "mlenv.lock"))
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-2000:]
    amd = run_cli(
        "verify",
        f"{transport}{tag}",
        "--lock",
        str(multi.project / "mlenv.lock"),
        "--platform",
        "linux/amd64",
    )
    if transport == "docker://":  # the registry's answer names the image's own platform: refused
        assert amd.code == 2 and "is linux/arm64, not linux/amd64" in amd.stderr, amd.stderr
    else:  # the engine's image is read and judged as amd64's: its architecture and base drift
        assert amd.code == 1, amd.stdout[-2000:] + amd.stderr[-2000:]
        assert "architecture" in amd.stdout


def _push_index(tag: str, entries: dict[str, str]) -> str:
    """An index under `tag` listing the given (platform -> manifest digest) entries."""
    push_index(RegistryClient(), tag, entries)
    return tag


def _platform_digests(tag: str) -> dict[str, str]:
    index = RegistryClient().get_manifest(ImageReference.parse(tag))
    return {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index.data["manifests"]
    }


def test_a_platform_missing_from_the_index_is_a_drift(multi: MultiBuild) -> None:
    digests = _platform_digests(multi.tag)
    repository = multi.tag.rpartition(":")[0]
    only_amd = _push_index(f"{repository}:only-amd64", {"linux/amd64": digests["linux/amd64"]})
    result = run_cli("verify", f"docker://{only_amd}", "--lock", str(multi.project / "mlenv.lock"))
    assert result.code == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "platform linux/arm64" in result.stdout
    assert "missing" in result.stdout


def test_an_image_of_the_wrong_architecture_under_a_platform_is_a_drift(multi: MultiBuild) -> None:
    digests = _platform_digests(multi.tag)
    repository = multi.tag.rpartition(":")[0]
    # The amd64 image listed as arm64 too: what a build on an x86 runner pushed as "multi-platform".
    swapped = _push_index(
        f"{repository}:amd64-as-arm64",
        {"linux/amd64": digests["linux/amd64"], "linux/arm64": digests["linux/amd64"]},
    )
    result = run_cli(
        "verify", f"docker://{swapped}", "--lock", str(multi.project / "mlenv.lock"), "--format", "json"
    )
    assert result.code == 1, result.stdout[-2000:] + result.stderr[-2000:]
    reports = {r["subject"].rpartition(" ")[2]: r for r in json.loads(result.stdout)}
    assert reports["(linux/amd64)"]["verdict"] == "match"
    arm = reports["(linux/arm64)"]
    assert arm["verdict"] == "drift"
    found = {(d["layer"], d["subject"]): (d["expected"], d["actual"]) for d in arm["drifts"]}
    assert found[("os", "architecture")] == ("arm64", "amd64"), arm["drifts"]
    assert any(layer == "base" for layer, _ in found)  # the amd64 base's layers are not arm64's


def test_the_same_lock_gives_the_same_arm64_image_id_on_a_second_no_cache_build(multi: MultiBuild) -> None:
    """The emulated platform, built again without cache. amd64's no-cache rebuild is test_reproducible's
    (the same build code on the engine's own platform); building it here too would cost CI two minutes."""
    again = run_cli(
        "build",
        str(multi.project),
        "--platform",
        "linux/arm64",
        "--tag",
        f"{multi.tag}-again",
        "--no-cache",
        "--no-verify",
        "--format",
        "json",
    )
    assert again.code == 0, again.stderr[-3000:]
    first = multi.output["platforms"]
    assert isinstance(first, dict)
    assert json.loads(again.stdout)["image-id"] == first["linux/arm64"]["image-id"]


def test_build_refuses_a_platform_the_lock_lacks(multi: MultiBuild) -> None:
    result = run_cli("build", str(multi.project), "--platform", "linux/s390x")
    assert result.code == 2
    assert (
        result.stderr.count("\n") <= 2
        and "--platform linux/s390x: not a platform of the lock" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_an_app_edit_rebuilds_arm64_and_verifies_it_from_the_layers_remembered(
    multi: MultiBuild, tmp_path: Path
) -> None:
    """The build's own verify of a rebuild reads only the layers it wrote and trusts those remembered for
    this lock: they must be judged as the arm64 image's, not as the lock's first platform's."""
    project = tmp_path / "fraud-detector"
    shutil.copytree(multi.project, project)
    main = project / "app" / "main.py"
    main.write_text(main.read_text() + "\nEDITED = 1\n")
    rebuilt = run_cli("build", str(project), "--platform", "linux/arm64", "--tag", f"{multi.tag}-edited")
    assert rebuilt.code == 0, rebuilt.stderr[-3000:]
    assert "were verified for this lock before (remembered by diff_id)" in rebuilt.stderr
    assert "reproduces mlenv.lock exactly (linux/arm64)" in rebuilt.stderr
