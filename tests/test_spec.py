"""Reading the spec: valid files load, every mistake names the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlenv.errors import SpecError
from mlenv.spec import load_spec, spec_hash
from tests.helpers import run_cli
from tools.localbase.project import EXAMPLES

MINIMAL = """
name = "demo"
[target]
python = "3.11.2"
glibc = "2.36"
[python]
requirements = ["Scikit_Learn==1.4.2", "pandas == 2.0.3"]
"""


def write(tmp_path: Path, text: str, name: str = "mlenv.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.python.requirements == ("pandas==2.0.3", "scikit-learn==1.4.2")
    assert spec.python.resolver == "uv" and spec.python.venv == "/opt/venv"
    assert spec.app.user == "app" and spec.as_of is None


def test_example_spec_loads() -> None:
    spec = load_spec(EXAMPLES / "fraud-detector")
    assert "scikit-learn==1.4.2" in spec.python.requirements
    assert spec.apt.packages == ("curl", "libgomp1")
    assert spec.app.models[0].strategy == "bake"
    assert spec.as_of is not None and spec.as_of.year == 2024


def test_pyproject_tool_table(tmp_path: Path) -> None:
    body = MINIMAL.replace("[target]", "[tool.mlenv.target]").replace("[python]", "[tool.mlenv.python]")
    body = body.replace('name = "demo"', '[tool.mlenv]\nname = "demo"')
    write(tmp_path, body, "pyproject.toml")
    assert load_spec(tmp_path).name == "demo"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "\n[apt]\npackagez = []\n", "mlenv.toml: apt: unknown key ('packagez' was unexpected)"),
        (
            MINIMAL.replace('"pandas == 2.0.3"', '"pandas >=< 2"'),
            "mlenv.toml: python.requirements[1]: invalid requirement",
        ),
        (MINIMAL + '\n[app]\nport = "80"\n', "mlenv.toml: app.port: '80' is not of type 'integer'"),
        (MINIMAL.replace('glibc = "2.36"', ""), "mlenv.toml: base: missing"),
        (MINIMAL + "\n[python.x]\n", "mlenv.toml: python: unknown key"),
        (
            "name = 'x'\nas-of = 2024-01-01T00:00:00\n[target]\npython='3.11.2'\nglibc='2.36'\n",
            "as-of: '2024-01-01T00:00:00' is not an RFC 3339 date-time with a timezone",
        ),
        ("name = [", "mlenv.toml: not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, text))
    assert expected in str(caught.value)


def test_requirements_file_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("pandas==2.0.3\n--hash=sha256:abc\n")
    write(tmp_path, MINIMAL.replace("[python]", '[python]\nrequirements-files = ["requirements.txt"]'))
    with pytest.raises(SpecError, match=r"requirements.txt:2: option '--hash=sha256:abc' is not supported"):
        load_spec(tmp_path)


def test_conflicting_requirements_are_refused(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("pandas==1.5.3\n")
    write(tmp_path, MINIMAL.replace("[python]", '[python]\nrequirements-files = ["requirements.txt"]'))
    with pytest.raises(SpecError, match="pandas is required twice"):
        load_spec(tmp_path)


def test_spec_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    a = load_spec(write(tmp_path, MINIMAL))
    reformatted = MINIMAL.replace('"pandas == 2.0.3"', '"pandas==2.0.3"').replace(
        "\n[target]", "\n\n[target]"
    )
    b = load_spec(write(tmp_path, reformatted))
    c = load_spec(write(tmp_path, MINIMAL.replace("2.0.3", "2.0.2")))
    assert spec_hash(a) == spec_hash(b) != spec_hash(c)


def test_cli_reports_one_line_and_exit_2(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL + "\n[apt]\npackagez = []\n")
    result = run_cli("lock", str(tmp_path))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "mlenv.toml: apt: unknown key" in result.stderr
    verbose = run_cli("-v", "lock", str(tmp_path))
    assert verbose.code == 2 and "Traceback" in verbose.stderr


def test_cli_missing_spec(tmp_path: Path) -> None:
    result = run_cli("lock", str(tmp_path))
    assert result.code == 2 and "no mlenv.toml" in result.stderr and "mlenv init" in result.stderr


def test_usage_mistakes_are_one_line_exit_2() -> None:
    for args in (("frobnicate",), ("lock", "--bogus")):
        result = run_cli(*args)
        assert result.code == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith("mlenv: error: ") and result.stderr.count("\n") == 1
