"""Policy findings from an image's config and files, and how a report carries them apart from drifts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from xml.etree import ElementTree

from mlenv.export.redaction import mask_credentials
from mlenv.model.facts import ConfigFact, EnvFacts, HealthcheckFact, PthFact, facts_data
from mlenv.model.labels import LABEL_BASE_DIGEST, LABEL_BASE_NAME
from mlenv.model.report import Finding, Report
from mlenv.model.schema import first_error
from mlenv.verify.compare import compare
from mlenv.verify.credentials import credential, masked
from mlenv.verify.formats import as_data, as_junit, as_text
from mlenv.verify.policy import (
    config_findings,
    file_findings,
    finding_line,
    pth_findings,
    runs_as_root,
    searched_roots,
)
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


AWS_ID = "AKIA" + "ABCDEFGHIJKLMNOP"  # built here, so no scanner takes the test for a leak
SECRET_VALUES = {
    "AWS_ACCESS_KEY_ID": AWS_ID,
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzzzzzzz",
    "GOOGLE_KEY_FOR_MAPS": "AIza" + "S" * 35,
    "SA": '{"type": "service_account", "project_id": "p"}',
    "HF_TOKEN": "hf_abcdefghijklmnop",
    "DB_PASSWORD": "hunter2",
    "SESSION_SECRET": "s3cr3t-value",
    "PIP_INDEX_URL": "https://ci:pa55word@pypi.example/simple",
}


def test_cloud_keys_tokens_and_passwords_are_credentials_named_never_shown() -> None:
    env = tuple(sorted(SECRET_VALUES.items())) + (("PATH", "/usr/bin"), ("EMPTY_TOKEN", ""))
    config = ConfigFact(**{**GOOD.__dict__, "env": env, "labels": (*GOOD.labels, ("ci.api-key", "k-123"))})
    found = lines(config)
    assert found == [
        "credentials: Env AWS_ACCESS_KEY_ID: an AWS access key id",
        "credentials: Env AWS_SECRET_ACCESS_KEY: a value of a *_ACCESS_KEY variable",
        "credentials: Env DB_PASSWORD: a value of a *_PASSWORD variable",
        "credentials: Env GOOGLE_KEY_FOR_MAPS: a Google API key",
        "credentials: Env HF_TOKEN: a value of a *_TOKEN variable",
        "credentials: Env PIP_INDEX_URL: a user:password@ URL",
        "credentials: Env SA: a GCP service account key",
        "credentials: Env SESSION_SECRET: a value of a *_SECRET variable",
        "credentials: Labels ci.api-key: a value of a *.API-KEY variable",
    ]
    assert credential("X", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl") == "a private key"
    assert credential("PATH", "/usr/bin") is None and credential("EMPTY_TOKEN", "") is None
    assert credential("TOKENIZERS_PARALLELISM", "false") is None
    for key, value in SECRET_VALUES.items():
        assert not any(value in line for line in found)
        assert masked(key, value) == f"<masked: {credential(key, value)}>"
    assert masked("PATH", "/usr/bin") == "/usr/bin"


def test_inspect_and_config_drifts_mask_credential_values() -> None:
    env = (("DB_PASSWORD", "hunter2"), ("PATH", "/usr/bin"))
    facts = EnvFacts(
        env=env, labels=(("token", AWS_ID),), config=ConfigFact(env=env, labels=(("token", AWS_ID),))
    )
    shown = json.dumps(facts_data(mask_credentials(facts)))
    assert "hunter2" not in shown and AWS_ID not in shown and "/usr/bin" in shown
    assert "<masked: a value of a *_PASSWORD variable>" in shown
    drift_report = compare(
        EnvFacts(config=ConfigFact(env=(("PATH", "/usr/bin"),))),
        EnvFacts(config=ConfigFact(env=env)),
        subject="img",
    )
    (drift,) = drift_report.drifts
    assert (drift.subject, drift.actual) == ("Env DB_PASSWORD", "<masked: a value of a *_PASSWORD variable>")


def test_a_pth_with_an_import_line_is_a_finding_except_setuptools_shim() -> None:
    site = "/opt/venv/lib/python3.11/site-packages"
    shim = (
        "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local';"
        " enabled and __import__('_distutils_hack').add_shim(); \n"
    )
    pths = [
        PthFact(path=f"{site}/zz.pth", site=site, runs_code=True, sha256="b" * 64),
        PthFact(path=f"{site}/paths.pth", site=site, runs_code=False, sha256="c" * 64),
        PthFact(
            path="/usr/lib/python3/dist-packages/distutils-precedence.pth",
            site="/usr/lib/python3/dist-packages",
            runs_code=True,
            sha256=hashlib.sha256(shim.encode()).hexdigest(),
        ),
    ]
    assert [finding_line(f) for f in pth_findings(pths)] == [
        f"pth-import: {site}/zz.pth: runs code at every interpreter start (an import line, site {site})"
    ]
