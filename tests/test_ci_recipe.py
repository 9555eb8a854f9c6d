"""The CI recipe and the pre-commit hook in examples/ci, run as written.

The recipe's `uses:` steps need GitHub (checkout, setup-python, upload-artifact); everything else runs
here: a throwaway git checkout of the fraud detector stands for the pushed commit, a venv for
setup-python, and each `run:` step goes through `bash -e` as a runner's does, with the recipe's env.
mlenv is installed by the recipe's own step, from this repository's git history pinned to its HEAD
commit (MLENV_REPO and MLENV_COMMIT point there instead of at the placeholder).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: the test extra installs it
from packaging.requirements import Requirement

from tests.helpers import Built
from tools.localbase.dockerd import Daemon

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "ci" / "github-actions.yml"
HOOKS = ROOT / "examples" / "ci" / "pre-commit-config.yaml"
GITHUB_ONLY = {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def steps() -> list[dict[str, Any]]:
    jobs = load(RECIPE)["jobs"]
    assert list(jobs) == ["image"]
    found = jobs["image"]["steps"]
    assert isinstance(found, list)
    return found


def hook() -> dict[str, Any]:
    (repo,) = load(HOOKS)["repos"]
    (found,) = repo["hooks"]
    assert isinstance(found, dict)
    return found


def installed_requirement() -> Requirement:
    """The requirement the recipe's install step names, with the recipe's env put in."""
    env = load(RECIPE)["env"]
    (install,) = [s["run"] for s in steps() if "pip install" in s.get("run", "")]
    (quoted,) = re.findall(r'"(mlenv @ [^"]+)"', install)
    return Requirement(
        quoted.replace("${MLENV_REPO}", env["MLENV_REPO"]).replace("${MLENV_COMMIT}", env["MLENV_COMMIT"])
    )


def test_recipe_installs_mlenv_from_git_pinned_to_a_commit_and_the_hook_the_same() -> None:
    for step in steps():
        assert ("uses" in step) != ("run" in step), step
        if "uses" in step:
            assert step["uses"].split("@")[0] in GITHUB_ONLY, step
    # `pip install mlenv` names a package nobody can install: the recipe must not say it.
    assert not any(re.search(r"pip install\s+mlenv\b", s.get("run", "")) for s in steps())
    requirement = installed_requirement()
    assert requirement.name == "mlenv" and requirement.url is not None
    assert re.fullmatch(r"git\+https://\S+@[0-9a-f]{40}", requirement.url), requirement.url
    # The hook installs the same mlenv into pre-commit's environment for it.
    entry = hook()
    assert entry["language"] == "python" and entry["pass_filenames"] is False
    (dependency,) = entry["additional_dependencies"]
    assert Requirement(dependency) == requirement
    # It runs whenever a file the lock depends on is committed.
    pattern = re.compile(entry["files"])
    for name in ("mlenv.toml", "mlenv.lock", "sub/pyproject.toml", "requirements-dev.txt"):
        assert pattern.search(name), name
    assert not pattern.search("app/main.py")


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_the_recipe_and_the_hook_run_on_this_machine(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    commit = git("rev-parse", "HEAD", cwd=ROOT)
    checkout = tmp_path / "checkout"
    shutil.copytree(fraud_image.project, checkout, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    identity = ["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"]
    git("init", "-q", cwd=checkout)
    git("add", "-A", cwd=checkout)
    git(*identity, "commit", "-q", "-m", "the commit CI checks", cwd=checkout)
    sha = git("rev-parse", "HEAD", cwd=checkout)

    venv = tmp_path / "venv"  # setup-python's stand-in: this machine's Python 3.11, clean
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The runner's environment: the recipe's env, with MLENV_REPO/COMMIT pointing at this repository,
    # the venv first on PATH, and no PYTHONPATH of the test run (mlenv must come from the install step).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {k: str(v) for k, v in load(RECIPE)["env"].items()}
    # file://localhost/...: a PEP 508 URL needs a host (pip refuses git+file:///...), and git takes this one.
    env |= {"MLENV_REPO": f"file://localhost{ROOT}", "MLENV_COMMIT": commit, "GITHUB_SHA": sha, "CI": "true"}
    env |= {"PATH": f"{venv / 'bin'}:{env['PATH']}", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    tag = f"fraud-detector:{sha}"
    try:
        for step in steps():
            if "uses" in step:
                continue
            script = step["run"].replace("${{ github.sha }}", sha)
            assert EXPRESSION.search(script) is None, f"an expression this test does not provide: {script}"
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        # The mlenv that ran is the one the recipe installed into the venv.
        assert shutil.which("mlenv", path=env["PATH"]) == str(venv / "bin" / "mlenv")
        (upload,) = [s for s in steps() if s.get("uses", "").startswith("actions/upload-artifact@")]
        for name in upload["with"]["path"].split():
            assert (checkout / name).stat().st_size > 0, name
        assert "<testsuite" in (checkout / "mlenv-verify.xml").read_text()

        # The pre-commit hook's entry, run the way pre-commit runs a hook (no file names passed).
        entry = shlex.split(hook()["entry"])
        fresh = subprocess.run(entry, cwd=checkout, env=env, capture_output=True, text=True)
        assert fresh.returncode == 0, fresh.stderr
        spec = checkout / "mlenv.toml"
        text = spec.read_text()
        assert "as-of = 2024-07-01T00:00:00Z" in text
        spec.write_text(text.replace("as-of = 2024-07-01T00:00:00Z", "as-of = 2024-07-02T00:00:00Z"))
        stale = subprocess.run(entry, cwd=checkout, env=env, capture_output=True, text=True)
        assert stale.returncode == 1 and "mlenv.toml" in stale.stderr, stale.stderr
    finally:
        if docker_daemon.client.images.list(name=tag):
            docker_daemon.client.images.remove(tag)
