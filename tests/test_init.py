"""`mlenv init` writes a starter spec that mlenv itself accepts."""

from __future__ import annotations

import re
from pathlib import Path

from mlenv.spec import load_spec
from tests.helpers import run_cli


def test_init_writes_a_valid_commented_spec(tmp_path: Path) -> None:
    project = tmp_path / "My Project"
    project.mkdir()
    result = run_cli("init", str(project))
    assert result.code == 0, result.stderr
    text = (project / "mlenv.toml").read_text()
    spec = load_spec(project)
    assert spec.name == "my-project" and spec.base is not None and spec.base.image == "python:3.11-slim"
    # Every table says what it is for, in words (a comment line or an inline comment).
    tables = re.split(r"^(?=\[)", text, flags=re.MULTILINE)
    names = [section.split("]", 1)[0] for section in tables[1:]]
    assert names == ["[base", "[python", "[apt", "[cuda", "[app"]
    for section in tables:
        comments = re.findall(r"#([^\n]*)", section)
        assert any(len(re.findall(r"[A-Za-z]{2,}", comment)) >= 3 for comment in comments), section
    # Every option shown commented out is one mlenv accepts, with the value shown, once uncommented.
    option = re.compile(r"^# ((?:[a-z-]+ = .*)|(?:\[\[app\.models\]\]))$", flags=re.MULTILINE)
    assert len(option.findall(text)) >= 10
    uncommented = project.parent / "uncommented"
    (uncommented / "models").mkdir(parents=True)
    (uncommented / "models" / "model.joblib").write_bytes(b"a stand-in model\n")
    (uncommented / "mlenv.toml").write_text(option.sub(r"\1", text))
    full = load_spec(uncommented)
    assert full.as_of is not None and full.as_of.year == 2025
    assert (full.python.index_url, full.python.extra_index_urls) == ("https://pypi.org/simple", ())
    assert (full.python.resolver, full.python.venv) == ("uv", "/opt/venv")
    assert full.app.cmd == ("uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000")
    assert (full.app.port, full.app.healthcheck) == (8000, "/health")
    assert [(m.source, m.target, m.strategy) for m in full.app.models] == [
        ("models/model.joblib", "/app/models/model.joblib", "bake")
    ]


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


def test_init_from_requirements_keeps_inside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "host.txt").write_text("pandas==2.0.3\n")
    outside = run_cli("init", str(project), "--from", str(tmp_path / "host.txt"))
    assert outside.code == 2 and "must be inside the project directory" in outside.stderr
    (project / "requirements.txt").write_text("-r ../host.txt\n")
    included = run_cli("init", str(project), "--from", str(project / "requirements.txt"))
    assert (
        included.code == 2
        and "requirements.txt:1: -r '../host.txt' is outside the project" in included.stderr
    )
    assert sorted(p.name for p in project.iterdir()) == ["requirements.txt"]
