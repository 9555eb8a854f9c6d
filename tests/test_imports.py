"""Every module imports on its own in a fresh interpreter: guards against import cycles."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import mlenv


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(mlenv.__path__, prefix="mlenv.") if m.name != "mlenv.__main__")


def test_every_module_imports_alone() -> None:
    modules = all_modules()
    assert "mlenv.lockfile" in modules and "mlenv.cli.app" in modules
    failures = []
    for module in modules:
        result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"{module}: {result.stderr.strip().splitlines()[-1]}")
    assert failures == []


def test_pure_layers_do_not_import_the_outside_world() -> None:
    # models and the lockfile writer do no IO: they must not pull in requests or the docker SDK.
    code = ("import sys, mlenv.models, mlenv.lockfile, mlenv.spec; "
            "print(sorted(m for m in ('docker', 'requests') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
