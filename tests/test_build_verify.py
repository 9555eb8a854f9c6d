"""The fraud detector built on the real engine, run, and verified; the seed's failures caught.

One good image is built with `mlenv build` (network off in the build). Drifted images are made the
simplest way each failure can be: a second lock for other package versions or another base, and a
small Dockerfile on top of the good image for an extra apt package, an edited file, a missing model.
verify is only ever given the first lock.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import tomlkit

from mlenv.model.schema import first_error
from tests.helpers import Built, derive_image, lock_and_build, lock_tag, run_cli
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image
from tools.localbase.project import copy_example
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


def verify(image: str, lock: Path, *extra: str) -> tuple[int, str]:
    result = run_cli("verify", image, "--lock", str(lock), *extra)
    assert result.code in (0, 1), result.stderr
    return result.code, result.stdout


def derived(
    good: Built,
    daemon: Daemon,
    tmp_path: Path,
    variant: str,
    lines: list[str],
    files: dict[str, Path] | None = None,
) -> str:
    """A drifted image: a few Dockerfile lines on top of the good image, tagged by its lock and `variant`."""
    context = tmp_path / variant
    context.mkdir()
    for name, source in (files or {}).items():
        shutil.copy(source, context / name)
    return derive_image(daemon, context, good.tag, lock_tag("fraud", good.lock, variant), lines)


# ---------------------------------------------------------------------------- the good image


def test_container_serves_health_and_runs_the_locked_versions(
    fraud_image: Built, docker_daemon: Daemon
) -> None:
    lock = tomlkit.parse(fraud_image.lock.read_text())
    versions = {p["name"]: p["version"] for p in lock["python"]["packages"]}
    container = docker_daemon.client.containers.run(
        fraud_image.tag, detach=True, ports={"8000/tcp": ("127.0.0.1", None)}
    )
    try:
        out = docker_daemon.client.containers.run(
            fraud_image.tag,
            ["python", "-c", "import sklearn, pandas; print(sklearn.__version__, pandas.__version__)"],
            remove=True,
            network_disabled=True,
        )
        assert out.decode().split() == [versions["scikit-learn"], versions["pandas"]] == ["1.4.2", "2.0.3"]
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        assert answer is not None and answer.status_code == 200 and answer.json() == {"status": "ok"}
        scored = requests.post(
            f"http://127.0.0.1:{port}/predict",
            timeout=5,
            json={"amount": 900.0, "hour": 3, "merchant_risk": 0.9, "card_age_days": 10},
        )
        assert 0.0 <= scored.json()["fraud_probability"] <= 1.0
        user = container.exec_run("id -u").output.decode().strip()
        assert user == "10001"
    finally:
        container.remove(force=True)


def test_good_image_verifies_through_every_transport(
    fraud_image: Built, docker_daemon: Daemon, registry: Registry, tmp_path: Path
) -> None:
    archive = tmp_path / "good.tar"
    with archive.open("wb") as out:
        for chunk in docker_daemon.client.images.get(fraud_image.tag).save(named=True):
            out.write(chunk)
    push_image(docker_daemon.client, fraud_image.tag, registry.host, "mlenv-test/fraud", "good")
    for image in (
        f"docker-daemon:{fraud_image.tag}",
        f"docker-archive:{archive}",
        f"docker://{registry.host}/mlenv-test/fraud:good",
        fraud_image.tag,
    ):
        code, out = verify(image, fraud_image.lock)
        assert code == 0, out
        assert out.endswith(f"{image}: matches the lock\n")


def test_json_and_junit_reports(fraud_image: Built) -> None:
    code, out = verify(f"docker-daemon:{fraud_image.tag}", fraud_image.lock, "--format", "json")
    assert code == 0 and first_error(json.loads(out), "report") is None


def test_hermetic_context_and_no_network_in_the_build(fraud_image: Built) -> None:
    dockerfile = run_cli("dockerfile", str(fraud_image.project))
    assert dockerfile.code == 0
    assert "--no-index" in dockerfile.stdout and "apt-get update" not in dockerfile.stdout
    assert (
        dockerfile.stdout == run_cli("dockerfile", str(fraud_image.project)).stdout
    )  # same lock, same bytes


# ---------------------------------------------------------------------------- the seed's failures


# (package, the lock's version, the drifted image's): both in one image, one build (each costs 2 minutes).
OTHER_VERSIONS = (("pandas", "2.0.3", "1.5.3"), ("scikit-learn", "1.4.2", "1.3.2"))


def test_other_package_versions_are_drift(
    fraud_image: Built, base_image_python: BaseImage, tmp_path: Path
) -> None:
    project = copy_example("fraud-detector", tmp_path, base={"image": base_image_python.ref})
    requirements = project / "requirements.txt"
    other = {package: found for package, _, found in OTHER_VERSIONS}
    lines = [
        f"{line.split('==')[0]}=={other[line.split('==')[0]]}" if line.split("==")[0] in other else line
        for line in requirements.read_text().splitlines()
    ]
    requirements.write_text("\n".join(lines) + "\n")
    assert all(f"{package}=={found}" in lines for package, found in other.items())
    shutil.copytree(fraud_image.project / "models", project / "models", dirs_exist_ok=True)
    # The model was written by scikit-learn 1.4.2, which `mlenv lock` refuses under 1.3.2 unless the spec
    # accepts that one mismatch; the image is then built, and verify names what its lock does not allow.
    spec = tomlkit.parse((project / "mlenv.toml").read_text())
    spec["app"]["models"][0]["accept-producer"] = {"scikit-learn": "1.4.2"}
    (project / "mlenv.toml").write_text(tomlkit.dumps(spec))
    tag = lock_and_build(project, "fraud")
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1
    for package, expected, found in OTHER_VERSIONS:
        assert f"python: {package}: version: expected {expected}, found {found}" in out
    assert "models: /app/models/model.joblib: written by scikit-learn 1.4.2; the image has" in out


def test_other_base_is_drift(
    fraud_image: Built,
    base_image_python: BaseImage,
    docker_daemon: Daemon,
    registry: Registry,
    tmp_path: Path,
) -> None:
    # Another base: the same distribution with one file changed, flattened into a single new layer.
    client = docker_daemon.client
    container = client.containers.create(base_image_python.local, ["sh", "-c", "true"])
    try:
        flat = tmp_path / "other-base.tar"
        with flat.open("wb") as out:
            for chunk in container.export():
                out.write(chunk)
    finally:
        container.remove(force=True)
    local = lock_tag("other-base", fraud_image.lock)
    repository, _, version = local.partition(":")
    client.api.import_image_from_file(
        str(flat),
        repository=repository,
        tag=version,
        changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )
    push_image(client, local, registry.host, "mlenv-test/other-base", "1")
    project = copy_example(
        "fraud-detector", tmp_path, base={"image": f"{registry.host}/mlenv-test/other-base:1"}
    )
    shutil.copytree(fraud_image.project / "models", project / "models", dirs_exist_ok=True)
    tag = lock_and_build(project, "fraud")
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1
    assert "base: layer 1 of 1: layers: expected sha256:" in out
    assert "labels: org.opencontainers.image.base.digest: version: expected" in out


def test_extra_apt_package_is_drift(fraud_image: Built, docker_daemon: Daemon, tmp_path: Path) -> None:
    downloads = tmp_path / "debs"
    downloads.mkdir()
    subprocess.run(["apt-get", "download", "bash-completion"], cwd=downloads, check=True, capture_output=True)
    deb = next(downloads.glob("bash-completion_*.deb"))
    tag = derived(
        fraud_image,
        docker_daemon,
        tmp_path,
        "extra-apt",
        ["COPY extra.deb /tmp/extra.deb", "RUN dpkg -i /tmp/extra.deb && rm /tmp/extra.deb"],
        {"extra.deb": deb},
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1 and "apt: bash-completion:all: extra (found " in out


def test_edited_site_packages_file_is_drift(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = derived(
        fraud_image,
        docker_daemon,
        tmp_path,
        "edited",
        ["RUN echo '# patched in production' >> /opt/venv/lib/python3.11/site-packages/pandas/__init__.py"],
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1
    # Judged against the locked wheel's RECORD, and reported once: by the files layer, with both hashes.
    path = "/opt/venv/lib/python3.11/site-packages/pandas/__init__.py"
    assert re.search(
        rf"files: {re.escape(path)}: modified \(sha256:[0-9a-f]{{64}} .*sha256:[0-9a-f]{{64}}", out
    ), out
    assert [line for line in out.splitlines() if "pandas/__init__.py" in line and "modified" in line] == [
        next(line for line in out.splitlines() if f"files: {path}: modified" in line)
    ], out


def test_missing_model_is_drift_and_junit_shows_it(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    tag = derived(fraud_image, docker_daemon, tmp_path, "no-model", ["RUN rm /app/models/model.joblib"])
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1 and "models: /app/models/model.joblib: missing" in out
    code, junit = verify(f"docker-daemon:{tag}", fraud_image.lock, "--format", "junit")
    assert code == 1 and junit.count("<failure ") == 1 and 'name="models"' in junit


def test_stale_lock_is_refused_by_build(fraud_image: Built, tmp_path: Path) -> None:
    project = tmp_path / "stale"
    shutil.copytree(fraud_image.project, project)
    spec = project / "mlenv.toml"
    spec.write_text(spec.read_text().replace("port = 8000", "port = 8001"))
    result = run_cli("build", str(project))
    assert result.code == 1 and "is stale" in result.stderr and "mlenv lock" in result.stderr


def test_a_wrong_wheel_hash_is_refused_before_docker_builds(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    project = tmp_path / "tampered"
    shutil.copytree(fraud_image.project, project)
    lock_path = project / "mlenv.lock"
    document = tomlkit.parse(lock_path.read_text())
    wheel = next(p for p in document["python"]["packages"] if p["name"] == "joblib")["wheels"][0]
    wheel["hashes"]["sha256"] = "0" * 64
    lock_path.write_text(tomlkit.dumps(document))
    images_before = {image.id for image in docker_daemon.client.images.list(all=True)}
    containers_before = {c.id for c in docker_daemon.client.containers.list(all=True)}
    result = run_cli("build", str(project), "--tag", lock_tag("fraud", lock_path, "tampered"))
    error = result.stderr.splitlines()[-1]  # progress lines come first; the error is the one last line
    assert (
        result.code == 2 and result.stderr.count("mlenv: error: ") == 1 and error.startswith("mlenv: error: ")
    )
    assert f"{wheel['name']}: sha256 is " in error and f"the lock says {'0' * 64}" in error
    assert {image.id for image in docker_daemon.client.images.list(all=True)} == images_before
    assert {c.id for c in docker_daemon.client.containers.list(all=True)} == containers_before
