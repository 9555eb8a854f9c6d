"""End to end on the engine: wheels built on the host at lock (an sdist-only pin, a project directory, a
git commit) are installed by `mlenv build` from the content store with no network in the build, and
`mlenv verify` explains their files through each wheel's RECORD. One build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import lock_tag, run_cli
from tests.test_local_packages import git, make_package
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


def test_built_wheels_are_installed_and_verified(
    base_image_python: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    make_package(project / "libs" / "featurelib", "featurelib", "0.1.0", ["six==1.16.0"])
    repository = make_package(tmp_path / "repository", "gitlib", "1.0", [])
    git("init", "-q", "-b", "main", cwd=repository)
    git("add", ".", cwd=repository)
    git("commit", "-q", "-m", "gitlib 1.0", cwd=repository)
    # as-of and one apt package as the fraud example has them: verify's accounting of the user and apt
    # steps is exercised there; this test is about the Python layer.
    (project / "mlenv.toml").write_text(
        'name = "built-wheels"\nas-of = 2024-07-01T00:00:00Z\n'
        f'[base]\nimage = "{base_image_python.ref}"\nplatforms = ["linux/amd64"]\n'
        '[apt]\npackages = ["libgomp1"]\n'
        "[python]\nrequirements = ["
        f'"docopt==0.6.2", "./libs/featurelib", "gitlib @ git+file://{repository}@main"]\n'
    )
    env = os.environ | {"MLENV_CACHE": str(tmp_path / "cache")}  # only this lock's builds are in the store
    locked = run_cli("lock", str(project), env=env)
    assert locked.code == 0, locked.stderr
    lock = read_lock(project / "mlenv.lock")
    built = sorted(p.name for p in lock.python.packages for w in p.wheels if w.hash_source == "built")
    assert built == ["docopt", "featurelib", "gitlib"]

    tag = lock_tag("built-wheels", project / "mlenv.lock")
    result = run_cli("build", str(project), "--tag", tag, env=env)
    assert result.code == 0, result.stderr[-2000:]
    try:
        verified = run_cli("verify", f"docker-daemon:{tag}", "--lock", str(project / "mlenv.lock"), env=env)
        assert verified.code == 0, verified.stdout + verified.stderr
        venv = lock.python.venv
        output = docker_daemon.client.containers.run(
            tag,
            [
                f"{venv}/bin/python",
                "-c",
                "import docopt, featurelib, gitlib, six\n"
                "print(docopt.__version__, featurelib.VERSION, gitlib.VERSION)",
            ],
            remove=True,
            network_disabled=True,
            user="root",
            entrypoint=[],
        )
        assert output.decode().split() == ["0.6.2", "0.1.0", "1.0"]
    finally:
        docker_daemon.client.images.remove(tag, force=True)  # no other test reads this image
