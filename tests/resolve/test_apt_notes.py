"""The apt step's notes reach the user: `mlenv lock` of a virtual apt package with one provider says which
package it chose, once, on stderr (resolve/lock.py used to drop every note of the apt resolver)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import run_cli
from tools.localbase.images import BaseImage

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


def test_a_virtual_apt_package_locks_its_provider_and_says_so(
    base_image_python: BaseImage, tmp_path: Path
) -> None:
    (tmp_path / "mlenv.toml").write_text(
        f'name = "notes"\n[base]\nimage = "{base_image_python.ref}"\n[apt]\npackages = ["libz-dev"]\n'
    )
    result = run_cli("lock", str(tmp_path))
    assert result.code == 0, result.stderr
    note = "mlenv: warning: selecting zlib1g-dev for the virtual package libz-dev"
    assert [line for line in result.stderr.splitlines() if "virtual package" in line] == [note]
    pins = {p.name: p for p in read_lock(tmp_path / "mlenv.lock").apt.packages}
    assert pins["zlib1g-dev"].requested and "libz-dev" not in pins
