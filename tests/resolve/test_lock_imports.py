"""A lock of the Python layer alone does not import the apt solver (~0.25 s): resolve/lock.py and
resolve/upgrade.py import it only where a spec has [apt] packages or an apt flag is given."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from mlenv.resolve.lock import resolve_lock
from mlenv.resolve.upgrade import apt_preferences, parse_upgrade, unknown_upgrades
from tests.lockdata import full_lock
upgrade = parse_upgrade(everything=False, python=["numpy"], apt=[])
unknown_upgrades(full_lock(), full_lock(), upgrade)
print("mlenv.resolve.apt" in sys.modules)
parse_upgrade(everything=False, python=[], apt=["curl"])
print("mlenv.resolve.apt" in sys.modules)
"""


def test_the_apt_solver_is_imported_only_for_apt() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
