"""The example projects copied where a run may change them, and the fraud detector's model trained."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import tomlkit

from tools.localbase import Unavailable
from tools.localbase.cache import cache_dir, cache_lock

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def copy_example(name: str, destination: Path, /, **spec_changes: object) -> Path:
    """Copy examples/NAME to `destination` and apply top-level table changes to its mlenv.toml.

    A keyword's underscores become dashes (as_of= sets `as-of`); a value of None removes the table.
    Returns the project directory.
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
    if shutil.which("uv") is None:
        raise Unavailable("uv", "not installed; it makes the venv that trains the example's model")
    requirements = EXAMPLES / "fraud-detector" / "requirements.txt"
    venv = cache_dir("train-venvs") / hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    with cache_lock(f"train-{venv.name}"):
        if not (venv / "bin" / "python").exists():
            subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
            subprocess.run(
                [
                    "uv",
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(venv / "bin" / "python"),
                    "-r",
                    str(requirements),
                ],
                check=True,
            )
    model = project / "models" / "model.joblib"
    subprocess.run(
        [str(venv / "bin" / "python"), str(project / "train.py"), str(model)], check=True, capture_output=True
    )
    return model
