"""Every path the spec names stays inside the project: an absolute path, `../..` or a symlink out of the
project is refused with one line naming the key, and nothing of the host is read (hashed, packed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mlenv.build.context import refuse_outside
from mlenv.errors import BuildError, SpecError
from mlenv.files import inside
from mlenv.lockfile import loads
from mlenv.model.spec import ModelSpec, Spec
from mlenv.resolve.models import lock_model
from mlenv.spec import load_spec
from tests.helpers import run_cli

SPEC = """
name = "demo"
[target]
python = "3.11.2"
glibc = "2.36"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project beside a `host` directory holding a file that must never be read through the spec."""
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "secret.bin").write_bytes(b"host data")
    (tmp_path / "host" / "requirements.txt").write_text("pandas==2.0.3\n")
    root = tmp_path / "project"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "models").mkdir()
    (root / "models" / "model.bin").write_bytes(b"model")
    (root / "out-link").symlink_to(tmp_path / "host")
    (root / "models" / "out.bin").symlink_to(tmp_path / "host" / "secret.bin")
    (root / "models" / "in.bin").symlink_to(root / "models" / "model.bin")
    (root / "loop").symlink_to(root / "loop")
    return root


def spec_with(root: Path, body: str) -> Path:
    (root / "mlenv.toml").write_text(SPEC + body)
    return root


OUTSIDE = [
    ('[app]\ncopy = ["{host}"]\n', "app.copy[0]"),
    ('[app]\ncopy = ["app", "../host"]\n', "app.copy[1]"),
    ('[app]\ncopy = ["out-link"]\n', "app.copy[0]"),
    ('[app]\ncopy = ["app/../../host"]\n', "app.copy[0]"),
    ('[[app.models]]\nsource = "models/out.bin"\ntarget = "/m"\n', "app.models[0].source"),
    ('[[app.models]]\nsource = "{host}/secret.bin"\ntarget = "/m"\n', "app.models[0].source"),
    ('[[app.models]]\nsource = "../../host/secret.bin"\ntarget = "/m"\n', "app.models[0].source"),
    (
        '[[app.models]]\nsource = "out-link/secret.bin"\nstrategy = "mount"\ntarget = "/m"\n',
        "app.models[0].source",
    ),
    ('[[app.models]]\nsource = "loop"\ntarget = "/m"\n', "app.models[0].source"),
    ('[python]\nrequirements-files = ["../host/requirements.txt"]\n', "python.requirements-files[0]"),
    ('[python]\nrequirements-files = ["{host}/requirements.txt"]\n', "python.requirements-files[0]"),
    ('[python]\nrequirements-files = ["out-link/requirements.txt"]\n', "python.requirements-files[0]"),
]


@pytest.mark.parametrize(("body", "key"), OUTSIDE)
def test_a_path_out_of_the_project_is_refused_naming_the_key(project: Path, body: str, key: str) -> None:
    spec_with(project, body.format(host=project.parent / "host"))
    with pytest.raises(SpecError) as caught:
        load_spec(project)
    assert f"mlenv.toml: {key}: " in str(caught.value)
    assert "outside the project directory" in str(caught.value)


def test_a_requirements_include_out_of_the_project_is_refused(project: Path) -> None:
    (project / "requirements.txt").write_text("numpy==1.26.4\n-r ../host/requirements.txt\n")
    spec_with(project, '[python]\nrequirements-files = ["requirements.txt"]\n')
    with pytest.raises(SpecError, match=r"requirements.txt:2: -r '../host/requirements.txt' is outside"):
        load_spec(project)


def test_paths_inside_the_project_are_accepted(project: Path) -> None:
    (project / "sub").mkdir()
    (project / "sub" / "base.txt").write_text("numpy==1.26.4\n")
    (project / "requirements.txt").write_text("-r sub/base.txt\npandas==2.0.3\n")
    body = (
        '[python]\nrequirements-files = ["requirements.txt"]\n'
        '[app]\ncopy = ["app", "./app/main.py", "app/../models"]\n'
        '[[app.models]]\nsource = "models/in.bin"\ntarget = "/m"\n'
    )
    spec = load_spec(spec_with(project, body))
    assert spec.python.requirements == ("numpy==1.26.4", "pandas==2.0.3")
    assert spec.app.copy == ("app", "./app/main.py", "app/../models")


def test_inside(project: Path) -> None:
    assert inside(project, "app/main.py") == (project / "app" / "main.py").resolve()
    assert inside(project, ".") == project.resolve()
    assert inside(project, "models/in.bin") == (project / "models" / "model.bin").resolve()
    for outside in ("", "/etc/passwd", "..", "app/../../host", "out-link", "models/out.bin", "loop"):
        assert inside(project, outside) is None, outside


def test_the_cli_refuses_without_reading_the_host_file(project: Path) -> None:
    spec_with(project, '[[app.models]]\nsource = "models/out.bin"\ntarget = "/m"\n')
    result = run_cli("lock", str(project))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "app.models[0].source: 'models/out.bin' is outside the project directory" in result.stderr
    assert not (project / "mlenv.lock").exists()


def test_a_hand_edited_lock_naming_a_host_path_is_not_packed(project: Path) -> None:
    lock = loads(
        (Path(__file__).parent / "fixtures" / "golden" / "mlenv.lock").read_text(), path="mlenv.lock"
    )
    refuse_outside(lock, Path(__file__).parent.parent / "examples" / "fraud-detector")
    for edited in ("/etc", "../host", "out-link"):
        tampered = replace(lock, app=replace(lock.app, copy=(edited,)))
        with pytest.raises(BuildError, match=r"the lock's app.copy\[0\] .* is outside the project"):
            refuse_outside(tampered, project)
    model = replace(lock, models=(replace(lock.models[0], source="models/out.bin"),))
    with pytest.raises(BuildError, match=r"the lock's models\[0\].source 'models/out.bin' is outside"):
        refuse_outside(model, project)


def test_the_model_locker_checks_again(tmp_path: Path) -> None:
    """A Spec built by code, not read from a file, cannot get a host file hashed into the lock either."""
    (tmp_path / "p").mkdir()
    (tmp_path / "h").write_bytes(b"host")
    spec = Spec(path="mlenv.toml", project_dir=str(tmp_path / "p"), name="x")
    with pytest.raises(SpecError, match=r"app.models\[0\].source: '../h' is outside the project"):
        lock_model(spec, 0, ModelSpec(source="../h", target="/m"))
