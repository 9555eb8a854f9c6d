"""`mlenv init` writes a starter spec that mlenv itself accepts."""

from __future__ import annotations

from pathlib import Path

from mlenv.spec import load_spec
from tests.helpers import run_cli


def test_init_writes_a_valid_commented_spec(tmp_path: Path) -> None:
    project = tmp_path / "My Project"
    project.mkdir()
    result = run_cli("init", str(project))
    assert result.code == 0, result.stderr
    text = (project / "mlenv.toml").read_text()
    assert text.count("#") > 10
    spec = load_spec(project)
    assert spec.name == "my-project" and spec.base is not None and spec.base.image == "python:3.11-slim"


def test_init_from_requirements(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.4.2\n# comment\npandas==2.0.3\n")
    result = run_cli("init", str(tmp_path), "--from", str(tmp_path / "requirements.txt"))
    assert result.code == 0, result.stderr
    assert load_spec(tmp_path).python.requirements == ("pandas==2.0.3", "scikit-learn==1.4.2")


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "mlenv.toml").write_text("keep me\n")
    result = run_cli("init", str(tmp_path))
    assert result.code == 2 and "already exists" in result.stderr
    assert (tmp_path / "mlenv.toml").read_text() == "keep me\n"
