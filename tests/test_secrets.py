"""Secrets never enter an image: the .dockerignore and the app copy's refusal come from one list of rules,
and a secret-like file or training data in the app copy is refused (one line naming it) unless the spec
allows that path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlenv.build.context import refuse_secret_files
from mlenv.errors import BuildError, SpecError
from mlenv.model.ignore import SECTIONS, ignore_match
from mlenv.render.dockerignore import DOCKERIGNORE
from mlenv.spec import load_spec, spec_hash


def test_the_dockerignore_is_written_from_the_rules() -> None:
    lines = [line for line in DOCKERIGNORE.splitlines() if not line.startswith("#")]
    assert lines == [p for section in SECTIONS for p in section.patterns]
    for pattern in (".env", ".env.*", "**/*.pem", "**/*.key", "**/id_rsa*", "**/config/secrets.yaml"):
        assert pattern in lines
    assert "**/data/raw" in lines and "**/data/processed" in lines


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (".env", "secret"),
        ("app/.env.local", "secret"),
        ("app/certs/server.pem", "secret"),
        ("app/tls.key", "secret"),
        ("app/id_rsa", "secret"),
        ("config/secrets.yaml", "secret"),
        ("app/config/secrets.yaml", "secret"),
        ("data/raw/transactions.csv", "data"),
        ("app/data/processed/train.parquet", "data"),
        ("app/__pycache__/main.cpython-311.pyc", "noise"),
        ("data/lookup.csv", "noise"),
    ],
)
def test_rules_classify_paths(path: str, kind: str) -> None:
    match = ignore_match(path)
    assert match is not None and match.kind == kind


@pytest.mark.parametrize("path", ["app/main.py", "app/config/settings.yaml", "app/keys.py", "app/tests/x.py"])
def test_ordinary_app_files_are_not_matched(path: str) -> None:
    assert ignore_match(path) is None


def app_tree(tmp_path: Path, *files: str) -> Path:
    for name in ("app/__init__.py", "app/main.py", *files):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x\n")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("app/.env", "a secret-like file (matches **/.env)"),
        ("app/certs/private.pem", "a secret-like file (matches **/*.pem)"),
        ("app/deploy/id_rsa", "a secret-like file (matches **/id_rsa*)"),
        ("app/config/secrets.yaml", "a secret-like file (matches **/config/secrets.yaml)"),
        ("app/data/raw/2024.csv", "training data (matches **/data/raw)"),
    ],
)
def test_the_app_copy_refuses_a_secret_naming_it(tmp_path: Path, name: str, reason: str) -> None:
    project = app_tree(tmp_path, name)
    with pytest.raises(BuildError) as raised:
        refuse_secret_files(("app",), project)
    shown = name if "data/raw" not in name else "app/data/raw"
    assert raised.value.message == f"app.copy would put {shown} into the image: {reason}"
    assert "\n" not in str(raised.value) and "[app] allow" in str(raised.value)
    assert raised.value.exit_code == 2


def test_an_allowed_path_is_packed(tmp_path: Path) -> None:
    project = app_tree(tmp_path, "app/certs/public.pem")
    refuse_secret_files(("app",), project, allow=("app/certs/public.pem",))
    refuse_secret_files(("app",), project, allow=("app/certs",))  # a directory allows what is under it
    with pytest.raises(BuildError):
        refuse_secret_files(("app",), project, allow=("app/certs/other.pem",))


def test_a_clean_app_tree_and_a_single_file_copy(tmp_path: Path) -> None:
    project = app_tree(tmp_path, ".env")
    refuse_secret_files(("app",), project)  # the project's .env is not in the copy
    with pytest.raises(BuildError):
        refuse_secret_files(("app", ".env"), project)


SPEC = """\
name = "x"
[base]
image = "python:3.11-slim"
[python]
requirements = ["numpy==1.26.4"]
[app]
copy = ["app"]
"""


def test_the_spec_allow_key_and_its_hash(tmp_path: Path) -> None:
    app_tree(tmp_path)
    (tmp_path / "mlenv.toml").write_text(SPEC)
    plain = load_spec(tmp_path)
    assert plain.app.allow == ()
    (tmp_path / "mlenv.toml").write_text(SPEC + 'allow = ["app/certs/public.pem"]\n')
    allowing = load_spec(tmp_path)
    assert allowing.app.allow == ("app/certs/public.pem",)
    # Allowing a path changes what may be built, so the lock goes stale; no key, no change of hash.
    assert spec_hash(allowing) != spec_hash(plain)


SPEC_ENV = 'name = "demo"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n[app.env]\n'


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HF_TOKEN", "anything"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("DB_PASSWORD", "hunter2"),
        ("CLIENT_SECRET", "x"),
        ("OPENAI_API_KEY", "x"),
        ("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),
        ("INDEX", "https://user:pw@example.invalid/simple"),
        ("GH", "ghp_" + "a1B2" * 9),
        ("AWS_ID", "AKIA" + "ABCDEFGHIJKLMNOP"),
        ("KEY_PEM", "-----BEGIN RSA PRIVATE KEY-----"),
    ],
)
def test_a_secret_in_app_env_is_refused_at_lock(tmp_path: Path, name: str, value: str) -> None:
    (tmp_path / "mlenv.toml").write_text(SPEC_ENV + f'{name} = "{value}"\n')
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    message = str(caught.value)
    assert f"mlenv.toml: app.env.{name}: looks like a secret" in message
    assert f"docker run -e {name}" in message and value not in message  # the error does not echo it


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PYTHONUNBUFFERED", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("MODEL_URL", "https://models.example.invalid/model.bin"),
        ("LOG_LEVEL", "info"),
        ("KEYBOARD", "us"),
    ],
)
def test_ordinary_app_env_is_kept(tmp_path: Path, name: str, value: str) -> None:
    (tmp_path / "mlenv.toml").write_text(SPEC_ENV + f'{name} = "{value}"\n')
    assert load_spec(tmp_path).app.env == ((name, value),)
