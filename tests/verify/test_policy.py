"""Policy findings from an image's config and files, and how a report carries them apart from drifts."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

from mlenv.model.facts import ConfigFact, HealthcheckFact
from mlenv.model.labels import LABEL_BASE_DIGEST, LABEL_BASE_NAME
from mlenv.model.report import Finding, Report
from mlenv.model.schema import first_error
from mlenv.verify.formats import as_data, as_junit, as_text
from mlenv.verify.policy import config_findings, file_findings, finding_line, runs_as_root, searched_roots
from tests.helpers import run_cli

DIGEST = "sha256:" + "a" * 64
GOOD = ConfigFact(
    user="app",
    healthcheck=HealthcheckFact(test=("CMD", "true")),
    labels=((LABEL_BASE_DIGEST, DIGEST), (LABEL_BASE_NAME, "python:3.11-slim")),
    working_dir="/app",
)


def lines(config: ConfigFact) -> list[str]:
    return [finding_line(f) for f in config_findings(config)]


def test_a_good_config_has_no_findings() -> None:
    assert lines(GOOD) == []


def test_root_in_every_spelling() -> None:
    assert all(runs_as_root(user) for user in ("", "0", "root", "0:0", "root:root"))
    assert not any(runs_as_root(user) for user in ("app", "10001", "10001:0"))
    assert (
        lines(ConfigFact(**{**GOOD.__dict__, "user": ""}))[0] == "root-user: User: runs as root (User unset)"
    )


def test_no_healthcheck_and_healthcheck_none() -> None:
    for check in (None, HealthcheckFact(test=("NONE",))):
        found = lines(ConfigFact(**{**GOOD.__dict__, "healthcheck": check}))
        assert found == ["no-healthcheck: Healthcheck: no HEALTHCHECK"]


def test_base_pinned_by_digest_or_not() -> None:
    unlabelled = ConfigFact(**{**GOOD.__dict__, "labels": ()})
    assert lines(unlabelled) == [
        "unpinned-base: Labels: base not pinned by digest (no org.opencontainers.image.base.name label)"
    ]
    by_tag = ConfigFact(**{**GOOD.__dict__, "labels": ((LABEL_BASE_NAME, "python:3.11"),)})
    assert lines(by_tag) == ["unpinned-base: Labels: base not pinned by digest (base python:3.11)"]
    by_name = ConfigFact(**{**GOOD.__dict__, "labels": ((LABEL_BASE_NAME, f"python@{DIGEST}"),)})
    assert lines(by_name) == []


def test_credentials_in_env_and_labels_name_the_variable_not_the_value() -> None:
    config = ConfigFact(
        **{
            **GOOD.__dict__,
            "env": (("DATABASE_URL", "postgres://fraud:hunter2@db:5432/x"), ("MIRROR", "https://user@host/")),
            "labels": (*GOOD.labels, ("registry", "https://ci:s3cret@registry.example/")),
        }
    )
    found = lines(config)
    assert found == [
        "credentials: Env DATABASE_URL: a user:password@ URL",
        "credentials: Labels registry: a user:password@ URL",
    ]
    assert not any("hunter2" in line or "s3cret" in line for line in found)


def test_secret_like_files_and_training_data() -> None:
    paths = [
        "/app/main.py",
        "/app/.env",
        "/app/.env.production",
        "/app/certs/server.pem",
        "/app/tls.key",
        "/root/.ssh/id_rsa",
        "/app/config/secrets.yaml",
        "/app/config/settings.yaml",
        "/app/data/raw/2024.csv",
        "/app/data/raw/2025.csv",
        "/app/data/processed/train.parquet",
        "/app/__pycache__/main.cpython-311.pyc",
    ]
    assert [finding_line(f) for f in file_findings(paths)] == [
        "secret-file: /app/.env: a secret-like file (**/.env)",
        "secret-file: /app/.env.production: a secret-like file (**/.env.*)",
        "secret-file: /app/certs/server.pem: a secret-like file (**/*.pem)",
        "secret-file: /app/config/secrets.yaml: a secret-like file (**/config/secrets.yaml)",
        "training-data: /app/data/processed: training data (**/data/processed)",
        "training-data: /app/data/raw: training data (**/data/raw)",
        "secret-file: /app/tls.key: a secret-like file (**/*.key)",
        "secret-file: /root/.ssh/id_rsa: a secret-like file (**/id_rsa*)",
    ]


def test_searched_roots_are_the_workdir_root_and_home() -> None:
    assert searched_roots(GOOD) == ("/app", "/home", "/root")
    assert searched_roots(ConfigFact(working_dir="/")) == ("/home", "/root")


FINDINGS = (
    Finding(rule="root-user", subject="User", detail="runs as root (User unset)"),
    Finding(rule="secret-file", subject="/app/.env", detail="a secret-like file (**/.env)"),
)


def test_findings_have_their_own_section_and_do_not_make_a_drift() -> None:
    report = Report(subject="img", layers=("base",), findings=FINDINGS)
    assert report.ok
    text = as_text(report)
    assert "  policy: 2 finding(s)\n      root-user: User: runs as root (User unset)\n" in text
    assert text.endswith("img: matches the lock\n")
    data = as_data(report)
    assert first_error(json.loads(json.dumps(data)), "report") is None
    assert [f["rule"] for f in data["findings"]] == ["root-user", "secret-file"]  # type: ignore[index]
    suites = ElementTree.fromstring(as_junit(report).split("\n", 1)[1])
    names = [s.get("name") for s in suites]
    assert names == ["mlenv verify img", "mlenv policy img"]
    assert [c.get("name") for c in suites[1]] == ["root-user", "secret-file"]
    assert suites[0].get("failures") == "0"


def test_an_unknown_policy_mode_names_the_policy_option(tmp_path: Path) -> None:
    result = run_cli("verify", "docker-archive:none.tar", "--policy", "bogus", cwd=tmp_path)
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("mlenv: error: --policy: unknown policy 'bogus'; choose one of ")
