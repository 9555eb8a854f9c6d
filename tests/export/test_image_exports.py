"""Exports of real images built on the engine: the HTML report of a drifted image rendered by Debian's
headless Chromium with no network, the in-toto subject as the image's own digest through the daemon
and a registry, every format byte-identical on a second run, and no credential from a docker config
or an index URL in any of them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.pylock import Pylock

from mlenv.export import FORMATS
from tests.conftest import missing
from tests.export.validators import audit_validator, validate_spdx
from tests.helpers import Built, run_cli
from tools.localbase.dockerd import Daemon
from tools.localbase.images import push_image
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]
CHROMIUM = "/usr/bin/chromium"
# Where the screenshot of the drifted report is kept for a person to look at: MLENV_TEST_ARTIFACTS names a
# directory to keep it in; without it the test's own tmp_path. Never the repository.
ARTIFACTS_ENV = "MLENV_TEST_ARTIFACTS"


def export(lock: Path, fmt: str, image: str, *, env: dict[str, str] | None = None) -> bytes:
    result = run_cli("export", "--lock", str(lock), "--format", fmt, "--image", image, env=env)
    assert result.code == 0, result.stderr
    return result.stdout.encode("utf-8")


# ---------------------------------------------------------------------------- HTML in Chromium


class Rows(HTMLParser):
    """The text of the verdict box and of every <tr class="drift"> in a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.verdict = ""
        self.drift_rows: list[str] = []
        self._in_verdict = 0
        self._in_drift = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("id") == "verdict":
            self._in_verdict = 1
        elif self._in_verdict and tag == "section":
            self._in_verdict += 1
        if tag == "tr" and "drift" in (values.get("class") or "").split():
            self._in_drift = True
            self.drift_rows.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self._in_verdict:
            self._in_verdict -= 1
        if tag == "tr":
            self._in_drift = False

    def handle_data(self, data: str) -> None:
        if self._in_verdict:
            self.verdict += data
        if self._in_drift:
            self.drift_rows[-1] += data + " "


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium in a network namespace of its own: the page cannot reach anything."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(
        ["unshare", "--net", *command], capture_output=True, text=True, timeout=120, check=False
    )


def test_drifted_image_report_renders_in_chromium_without_network(
    fraud_image: Built, drifted_image: str, tmp_path: Path
) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing("chromium", f"{CHROMIUM} is not installed (apt-get install chromium)")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        missing("chromium", "a network namespace for the browser needs unshare and root")
    page = tmp_path / "report.html"
    result = run_cli(
        "export",
        "--lock",
        str(fraud_image.lock),
        "--format",
        "html",
        "--image",
        f"docker-daemon:{drifted_image}",
        "-o",
        str(page),
    )
    # A drifted image exits 1, after the report is written.
    assert result.code == 1 and "2 drift(s) from the lock" in result.stderr, result.stderr

    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = Rows()
    rows.feed(dom.stdout)
    assert "DRIFT" in rows.verdict and f"docker-daemon:{drifted_image}: 2 drift(s)" in rows.verdict
    # The file accounting names the patched file by its absolute path and the layer that changed it; the
    # same file is not reported again as one that breaks the image's RECORD (python-files).
    patched = "/opt/venv/lib/python3.11/site-packages/pandas/__init__.py"
    assert not any("python-files" in r for r in rows.drift_rows)
    about_patched = [r for r in rows.drift_rows if patched in r]
    assert len(about_patched) == 2 and all("modified" in r and " of " in r for r in about_patched)
    assert any("/app/models/model.joblib" in r and "missing" in r for r in rows.drift_rows)
    # Each drift is listed once in the summary and once in its layer's table (the files layer's in the
    # files section); nothing else is highlighted.
    assert len(rows.drift_rows) == 4 and not any("scikit-learn" in r for r in rows.drift_rows)

    artifacts = Path(os.environ[ARTIFACTS_ENV]) / "export" if os.environ.get(ARTIFACTS_ENV) else tmp_path
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "drifted-report.png"
    screenshot.unlink(missing_ok=True)
    shot = chromium(
        page,
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,2200",
        "--hide-scrollbars",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000  # a rendered page, not a blank one


# ---------------------------------------------------------------------------- in-toto subject


def test_intoto_subject_is_the_image_digest_in_the_daemon_and_the_registry(
    fraud_image: Built, docker_daemon: Daemon, registry: Registry
) -> None:
    lock_sha = hashlib.sha256(fraud_image.lock.read_bytes()).hexdigest()
    locked = tomllib.loads(fraud_image.lock.read_text())
    image_id = docker_daemon.client.images.get(fraud_image.tag).id
    daemon = json.loads(export(fraud_image.lock, "intoto", f"docker-daemon:{fraud_image.tag}"))
    assert daemon["subject"] == [
        {"name": f"docker-daemon:{fraud_image.tag}", "digest": {"sha256": image_id.removeprefix("sha256:")}}
    ]
    assert daemon["predicate"]["buildDefinition"]["externalParameters"]["lock"]["digest"] == {
        "sha256": lock_sha
    }
    assert daemon["predicate"]["runDetails"]["byproducts"][0]["annotations"]["verdict"] == "match"
    resolved = {d["digest"]["sha256"] for d in daemon["predicate"]["buildDefinition"]["resolvedDependencies"]}
    wheels = {w["hashes"]["sha256"] for p in locked["python"]["packages"] for w in p.get("wheels", [])}
    debs = {p["sha256"] for p in locked.get("apt", {}).get("packages", [])}
    models = {m["sha256"] for m in locked["models"]}
    assert wheels and models and (wheels | debs | models) <= resolved
    assert locked["base"]["digest"].removeprefix("sha256:") in resolved

    manifest_digest = push_image(
        docker_daemon.client, fraud_image.tag, registry.host, "mlenv-test/export", "good"
    )
    reference = f"docker://{registry.host}/mlenv-test/export:good"
    pulled = json.loads(export(fraud_image.lock, "intoto", reference))
    assert pulled["subject"] == [
        {"name": reference, "digest": {"sha256": manifest_digest.removeprefix("sha256:")}}
    ]


# ---------------------------------------------------------------------------- every format, twice


def test_every_format_of_the_fraud_image_is_valid_and_the_same_twice(fraud_image: Built) -> None:
    image = f"docker-daemon:{fraud_image.tag}"
    outputs = {fmt: export(fraud_image.lock, fmt, image) for fmt in FORMATS}
    for fmt, data in outputs.items():
        assert export(fraud_image.lock, fmt, image) == data, f"{fmt} differs on a second run"
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(outputs["cyclonedx"].decode()) is None
    validate_spdx(json.loads(outputs["spdx"]))
    audit_validator().validate(json.loads(outputs["json"]))
    assert json.loads(outputs["json"])["verdict"] == "match"
    locked = tomllib.loads(fraud_image.lock.read_text())
    pylock = Pylock.from_dict(tomllib.loads(outputs["pylock"].decode()))
    assert {(p.name, str(p.version)) for p in pylock.packages} == {
        (p["name"], p["version"]) for p in locked["python"]["packages"]
    }
    bom = json.loads(outputs["cyclonedx"])
    purls = {c.get("purl") for c in bom["components"]}
    assert {f"pkg:pypi/{p['name']}@{p['version']}" for p in locked["python"]["packages"]} <= purls


# ---------------------------------------------------------------------------- credentials


def test_no_credential_from_a_docker_config_or_an_index_url_is_exported(
    fraud_image: Built, docker_daemon: Daemon, auth_registry: Registry, tmp_path: Path
) -> None:
    assert auth_registry.username and auth_registry.password and auth_registry.docker_config
    push_image(
        docker_daemon.client,
        fraud_image.tag,
        auth_registry.host,
        "mlenv-test/export",
        "good",
        auth={"username": auth_registry.username, "password": auth_registry.password},
    )
    secret_index = f"https://{auth_registry.username}:{auth_registry.password}@pypi.org/simple"
    lock = tmp_path / "mlenv.lock"
    lock.write_text(fraud_image.lock.read_text().replace('"https://pypi.org/simple"', f'"{secret_index}"'))
    assert lock.read_text().count(auth_registry.password) > 1
    env = {**os.environ, "DOCKER_CONFIG": str(auth_registry.docker_config)}
    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode())
    pair = f"{auth_registry.username}:{auth_registry.password}".encode()
    image = f"docker://{auth_registry.host}/mlenv-test/export:good"
    for fmt in FORMATS:
        # A lock never records credentials (the writer strips them): one carrying them is refused,
        # naming the key and never the secret.
        refused = run_cli("export", "--lock", str(lock), "--format", fmt, "--image", image, env=env)
        assert refused.code == 2 and "python.index-url" in refused.stderr, (fmt, refused.stderr)
        assert auth_registry.password not in refused.stderr + refused.stdout, fmt
        data = export(fraud_image.lock, fmt, image, env=env)  # read with the config's credentials
        assert auth_registry.password.encode() not in data, fmt
        assert token not in data and pair not in data, fmt
