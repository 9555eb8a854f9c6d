"""Helpers shared by tests: running the CLI in-process and preparing example projects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tomlkit

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run `python -m mlenv ARGS` as a user would: a separate process, real exit code and streams."""
    result = subprocess.run([sys.executable, "-m", "mlenv", *args], cwd=cwd, capture_output=True, text=True,
                            env=env, check=False)
    return CliResult(result.returncode, result.stdout, result.stderr)


def copy_example(name: str, destination: Path, /, **spec_changes: object) -> Path:
    """Copy examples/NAME to `destination` and apply top-level table changes to its mlenv.toml.

    A value of None removes the table. Returns the project directory.
    """
    project = destination / name
    shutil.copytree(EXAMPLES / name, project, ignore=shutil.ignore_patterns("__pycache__", "mlenv.lock"))
    spec_path = project / "mlenv.toml"
    document = tomlkit.parse(spec_path.read_text(encoding="utf-8"))
    for key, value in spec_changes.items():
        key = key.replace("_", "-")
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    spec_path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return project


def train_fraud_model(project: Path) -> Path:
    """Train the example's model with the versions the example pins (a cached uv venv), as a user would."""
    from tests.infra.cache import cache_dir, cache_lock

    requirements = (EXAMPLES / "fraud-detector" / "requirements.txt").read_text()
    import hashlib

    venv = cache_dir("train-venvs") / hashlib.sha256(requirements.encode()).hexdigest()[:16]
    with cache_lock(f"train-{venv.name}"):
        if not (venv / "bin" / "python").exists():
            subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
            subprocess.run(["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                            "-r", str(EXAMPLES / "fraud-detector" / "requirements.txt")], check=True)
    model = project / "models" / "model.joblib"
    subprocess.run([str(venv / "bin" / "python"), str(project / "train.py"), str(model)], check=True,
                   capture_output=True)
    return model
