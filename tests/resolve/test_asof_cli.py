"""`mlenv lock` at an as-of no snapshot archive can serve (as on this machine): one warning naming the
apt pins that may be newer than as-of; `--strict-as-of` makes it an error (exit 2, no lock written)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import run_cli
from tools.localbase.images import BaseImage

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

SPEC = """\
name = "asof"
as-of = 2024-07-01T00:00:00Z

[base]
image = "{base}"
platforms = ["linux/amd64"]

[apt]
packages = ["libgomp1"]

[cuda]
version = "none"
"""


def test_lock_warns_once_naming_the_pins_and_strict_refuses(
    base_image_python: BaseImage, tmp_path: Path
) -> None:
    project = tmp_path / "asof"
    project.mkdir()
    (project / "mlenv.toml").write_text(SPEC.format(base=base_image_python.ref))
    # Nothing listens on port 1: the snapshot archive cannot be reached, whatever this machine's network.
    env = dict(
        os.environ, MLENV_CACHE=str(tmp_path / "cache"), MLENV_SNAPSHOT_URL="http://127.0.0.1:1/archive"
    )

    strict = run_cli("lock", str(project), "--strict-as-of", env=env)
    assert strict.code == 2, strict.stderr
    assert not (project / "mlenv.lock").exists()
    errors = [line for line in strict.stderr.splitlines() if line.startswith("mlenv: error:")]
    assert len(errors) == 1 and "no snapshot archive answered for as-of 2024-07-01T00:00:00Z" in errors[0]

    locked = run_cli("lock", str(project), env=env)
    assert locked.code == 0, locked.stderr
    lock = read_lock(project / "mlenv.lock")
    assert all(s.resolved_from == "mirror" for s in lock.apt.sources)
    warnings = [line for line in locked.stderr.splitlines() if "as-of" in line]
    assert len(warnings) == 1, locked.stderr
    assert warnings[0].startswith(
        "mlenv: warning: apt: no snapshot archive answered for as-of 2024-07-01T00:00:00Z"
    )
    for pin in lock.apt.packages:
        assert f"{pin.name} {pin.version}" in warnings[0]
