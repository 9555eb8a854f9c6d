"""The main job, end to end on this machine: lock -> build -> verify -> export examples/fraud-detector.

Docker Hub may be out of reach, so the base image is made here: Debian bookworm with python3 by
debootstrap, served from a registry on 127.0.0.1 (the same machinery the tests use). Outputs go to
.mlenv-demo/ in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import copy_example, train_fraud_model
from tests.infra.cache import cache_dir
from tests.infra.docker import Daemon, start_dockerd
from tests.infra.images import make_base_image
from tests.infra.registry import start_registry

OUT = REPO / ".mlenv-demo"


def mlenv(*args: str) -> subprocess.CompletedProcess[str]:
    print(f"$ mlenv {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "mlenv", *args], text=True, check=False)
    return result


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    dockerd, host = (None, os.environ["DOCKER_HOST"]) if os.environ.get("DOCKER_HOST") else \
        start_dockerd(cache_dir("docker"))
    os.environ["DOCKER_HOST"] = host
    registry_dir = OUT / "registry"
    registry_dir.mkdir()
    registry_process, registry = start_registry(registry_dir)
    try:
        daemon = Daemon(host=host, client=docker.DockerClient(base_url=host, timeout=900))
        print("making the base image (debootstrap bookworm + python3; cached after the first run)", flush=True)
        base = make_base_image(daemon, registry, "python")
        project = copy_example("fraud-detector", OUT, base={"image": base.ref})
        print(f"base image {base.ref} ({base.digest}); project copied to {project}", flush=True)
        train_fraud_model(project)
        tag = "fraud-detector:demo"
        steps = [
            ("lock", str(project)),
            ("lock", "--check", str(project)),
            ("build", str(project), "--tag", tag),
            ("verify", f"docker-daemon:{tag}", "--lock", str(project / "mlenv.lock")),
        ]
        for step in steps:
            if mlenv(*step).returncode != 0:
                print(f"demo: `mlenv {' '.join(step)}` failed", file=sys.stderr)
                return 1
        for fmt, name in (("cyclonedx", "sbom.cdx.json"), ("spdx", "sbom.spdx.json"), ("intoto", "provenance.json"),
                          ("html", "report.html"), ("pylock", "pylock.toml")):
            result = mlenv("export", str(project), "--format", fmt, "--image", f"docker-daemon:{tag}",
                           "-o", str(OUT / name))
            if result.returncode != 0:
                print(f"demo: export {fmt} failed", file=sys.stderr)
                return 1
        print(f"\ndone. lock: {project / 'mlenv.lock'}\nimage: {tag}\naudits: {OUT}", flush=True)
        return 0
    finally:
        registry_process.terminate()
        if dockerd is not None:
            dockerd.terminate()


if __name__ == "__main__":
    sys.exit(main())
