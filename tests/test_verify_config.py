"""The image config on the real engine: every run-time field of the good fraud image is what the lock
(and the locked base's own config) determines, and each one changed by `docker commit --change` is a
drift that names the field with the expected and the found value.

A commit with no change keeps the config: the engine copies the container's config, which it made
from the image's, so the good image's no-op commit verifies.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mlenv.model.labels import LABEL_TITLE
from tests.helpers import Built, derive_image, lock_tag, run_cli, session_tag
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


def verify(image: str, lock: Path, *extra: str) -> tuple[int, str]:
    result = run_cli("verify", image, "--lock", str(lock), *extra)
    assert result.code in (0, 1), result.stderr
    return result.code, result.stdout


def committed(
    good: Built, daemon: Daemon, variant: str, changes: list[str], conf: dict[str, Any] | None = None
) -> str:
    """The good image committed from a container of it (never started) with `changes` applied."""
    tag = lock_tag("fraud", good.lock, variant)
    repository, _, name = tag.rpartition(":")
    container = daemon.client.containers.create(good.tag)
    try:
        container.commit(repository=repository, tag=name, changes=changes, conf=conf)
    finally:
        container.remove(force=True)
    return tag


def good_config(good: Built, daemon: Daemon) -> dict[str, Any]:
    config: dict[str, Any] = daemon.client.images.get(good.tag).attrs["Config"]
    return config


def test_a_no_op_commit_keeps_every_config_field(fraud_image: Built, docker_daemon: Daemon) -> None:
    tag = committed(fraud_image, docker_daemon, "config-noop", [])
    before, after = (
        good_config(fraud_image, docker_daemon),
        docker_daemon.client.images.get(tag).attrs["Config"],
    )
    fields = ("User", "Cmd", "Entrypoint", "Env", "WorkingDir", "ExposedPorts", "Healthcheck", "Volumes")
    assert {f: after.get(f) for f in (*fields, "StopSignal", "Labels")} == {
        f: before.get(f) for f in (*fields, "StopSignal", "Labels")
    }
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 0, out


def test_good_image_reports_the_config_layer(fraud_image: Built) -> None:
    code, out = verify(f"docker-daemon:{fraud_image.tag}", fraud_image.lock)
    assert code == 0 and "  [ok] config\n" in out, out
    code, data = verify(f"docker-daemon:{fraud_image.tag}", fraud_image.lock, "--format", "json")
    assert code == 0 and {"name": "config", "ok": True} in json.loads(data)["layers"]


HEALTH = (
    '{"interval": 30000000000, "retries": 3, "start_period": 10000000000, "test": ["CMD", '
    '"/opt/venv/bin/python", "-c", "import urllib.request; '
    'urllib.request.urlopen(\'http://127.0.0.1:8000/health\', timeout=4)"], "timeout": 5000000000}'
)

CASES = [
    ("user", ["USER root"], "config: User: expected app, found root"),
    (
        "cmd",
        ['CMD ["python", "-c", "print(1)"]'],
        'config: Cmd: expected ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"], '
        'found ["python", "-c", "print(1)"]',
    ),
    (
        "entrypoint",
        ['ENTRYPOINT ["/bin/sh", "-c"]'],
        'config: Entrypoint: expected unset, found ["/bin/sh", "-c"]',
    ),
    ("env-changed", ["ENV PYTHONUNBUFFERED=0"], "config: Env PYTHONUNBUFFERED: expected 1, found 0"),
    (
        "env-added",
        ["ENV AWS_REGION=eu-west-1"],
        "config: Env AWS_REGION: extra (found eu-west-1, not in the lock)",
    ),
    ("workdir", ["WORKDIR /tmp"], "config: WorkingDir: expected /app, found /tmp"),
    ("port", ["EXPOSE 9999"], "config: ExposedPorts 9999/tcp: extra (found 9999/tcp, not in the lock)"),
    # A commit's HEALTHCHECK keeps the image's durations (the engine merges the change into the config).
    (
        "health-none",
        ["HEALTHCHECK NONE"],
        f'config: Healthcheck: expected {HEALTH}, found {{"interval": 30000000000, "retries": 3, '
        '"start_period": 10000000000, "test": ["NONE"], "timeout": 5000000000}',
    ),
    (
        "health-other",
        ["HEALTHCHECK CMD true"],
        f'config: Healthcheck: expected {HEALTH}, found {{"interval": 30000000000, "retries": 3, '
        '"start_period": 10000000000, "test": ["CMD-SHELL", "true"], "timeout": 5000000000}',
    ),
    ("volume", ['VOLUME ["/data"]'], "config: Volumes /data: extra (found /data, not in the lock)"),
    (
        "label-changed",
        [f"LABEL {LABEL_TITLE}=other"],
        f"config: Labels {LABEL_TITLE}: expected fraud-detector, found other",
    ),
    ("label-added", ["LABEL team=fraud"], "config: Labels team: extra (found fraud, not in the lock)"),
]


@pytest.mark.parametrize(("variant", "changes", "line"), CASES, ids=[c[0] for c in CASES])
def test_each_config_field_changed_is_a_drift(
    fraud_image: Built, docker_daemon: Daemon, variant: str, changes: list[str], line: str
) -> None:
    tag = committed(fraud_image, docker_daemon, f"config-{variant}", changes)
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1, out
    assert f"      {line}" in out, out


def test_a_stop_signal_is_a_drift(fraud_image: Built, docker_daemon: Daemon) -> None:
    # `--change STOPSIGNAL` is refused by the engine's commit ("not a valid change command"); the
    # commit's config body sets it.
    tag = committed(fraud_image, docker_daemon, "config-stopsignal", [], conf={"StopSignal": "SIGKILL"})
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1 and "      config: StopSignal: expected unset, found SIGKILL\n" in out, out


def test_an_env_variable_removed_is_a_drift(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    """A commit can add and change variables but not remove one (its config body is merged by key), so
    the good image's saved archive gets a config without PYTHONUNBUFFERED (a new config file, named by
    its sha256, that manifest.json points to)."""
    saved = tmp_path / "good.tar"
    with saved.open("wb") as out:
        for chunk in docker_daemon.client.images.get(fraud_image.tag).save(named=True):
            out.write(chunk)
    drifted = tmp_path / "env-removed.tar"
    with tarfile.open(saved) as source, tarfile.open(drifted, "w") as target:
        members = {m.name: m for m in source.getmembers()}
        manifest = json.loads(source.extractfile(members["manifest.json"]).read())  # type: ignore[union-attr]
        config = json.loads(source.extractfile(members[manifest[0]["Config"]]).read())  # type: ignore[union-attr]
        config["config"]["Env"] = [
            e for e in config["config"]["Env"] if not e.startswith("PYTHONUNBUFFERED=")
        ]
        data = json.dumps(config).encode()
        name = hashlib.sha256(data).hexdigest() + ".json"
        old = manifest[0]["Config"]
        manifest[0]["Config"] = name
        for member in source.getmembers():
            if member.name in ("manifest.json", old):
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for filename, body in ((name, data), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(filename)
            info.size = len(body)
            target.addfile(info, io.BytesIO(body))
    code, out = verify(f"docker-archive:{drifted}", fraud_image.lock)
    assert code == 1 and "      config: Env PYTHONUNBUFFERED: missing (expected 1)\n" in out, out


def test_good_image_has_no_policy_finding_and_passes_the_policy_gate(fraud_image: Built) -> None:
    code, out = verify(f"docker-daemon:{fraud_image.tag}", fraud_image.lock, "--policy", "fail")
    assert code == 0 and "policy:" not in out, out


def test_a_root_image_built_outside_mlenv_reports_runs_as_root(
    fraud_image: Built, docker_daemon: Daemon, base_image_python: BaseImage, tmp_path: Path
) -> None:
    """An image made with a plain Dockerfile on the base: its drifts from the fraud lock, and in the
    policy section the rules it breaks (root, no HEALTHCHECK, a base it does not name by digest)."""
    tag = session_tag("policy", base_image_python.ref, "root")
    derive_image(docker_daemon, tmp_path, base_image_python.local, tag, ["RUN mkdir -p /srv/app"])
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1, out
    policy = out[out.index("  policy: ") :]
    # derive_image restores the base's user, which is unset: the engine stores "USER root" then.
    assert "      root-user: User: runs as root (User root)\n" in policy, out
    assert "      no-healthcheck: Healthcheck: no HEALTHCHECK\n" in policy, out
    assert "      unpinned-base: Labels: base not pinned by digest" in policy, out
    code, data = verify(f"docker-daemon:{tag}", fraud_image.lock, "--format", "json")
    assert {f["rule"] for f in json.loads(data)["findings"]} >= {
        "root-user",
        "no-healthcheck",
        "unpinned-base",
    }


def test_credentials_in_env_and_labels_are_findings_and_masked_everywhere(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    """ENV and LABEL values that are credentials: verify names each as a policy finding (and the Env one
    as a config drift) and inspect shows the variable, in text and JSON, but never the value."""
    password, key_id = "hunter2-" + "p" * 8, "AKIA" + "Q" * 16
    tag = derive_image(
        docker_daemon,
        tmp_path,
        fraud_image.tag,
        lock_tag("fraud", fraud_image.lock, "credentials"),
        [f"ENV DB_PASSWORD={password}", f"LABEL ci.deploy-key={key_id}"],
    )
    code, out = verify(f"docker-daemon:{tag}", fraud_image.lock)
    assert code == 1, out
    assert "      credentials: Env DB_PASSWORD: a value of a *_PASSWORD variable\n" in out, out
    assert "      credentials: Labels ci.deploy-key: an AWS access key id\n" in out, out
    assert "config: Env DB_PASSWORD: extra (found <masked: a value of a *_PASSWORD variable>" in out, out
    for fmt in ("text", "json"):
        result = run_cli("inspect", f"docker-daemon:{tag}", "--format", fmt)
        assert result.code == 0, result.stderr
        assert password not in result.stdout and key_id not in result.stdout, result.stdout
    data = json.loads(run_cli("inspect", f"docker-daemon:{tag}", "--format", "json").stdout)
    assert data["config"]["env"]["DB_PASSWORD"] == "<masked: a value of a *_PASSWORD variable>"
    assert (
        "label: ci.deploy-key=<masked: an AWS access key id>"
        in run_cli("inspect", f"docker-daemon:{tag}").stdout
    )
    code, junit = verify(f"docker-daemon:{tag}", fraud_image.lock, "--format", "junit")
    assert password not in junit and key_id not in junit
