"""The main job, end to end on this machine: lock -> build -> verify -> export examples/fraud-detector.

Docker Hub may be out of reach, so the base image is made here: Debian bookworm with python3 by
debootstrap, served from a registry on 127.0.0.1 (tools/localbase, the machinery the tests and the
benchmarks use too). Outputs go to .mlenv-demo/ in the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as `python3 scripts/demo.py`: tools/ is beside scripts/

from tools.localbase import Unavailable  # noqa: E402 - needs the path above
from tools.localbase.project import copy_example, train_fraud_model  # noqa: E402
from tools.localbase.stack import local_stack  # noqa: E402

OUT = REPO / ".mlenv-demo"
TAG = "fraud-detector:demo"
EXPORTS = (
    ("cyclonedx", "sbom.cdx.json"),
    ("spdx", "sbom.spdx.json"),
    ("intoto", "provenance.json"),
    ("html", "report.html"),
    ("pylock", "pylock.toml"),
)


def mlenv(*args: str) -> int:
    print(f"$ mlenv {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "mlenv", *args], text=True, check=False).returncode


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "registry").mkdir(parents=True)
    print("making the base image (debootstrap bookworm + python3; cached after the first run)", flush=True)
    try:
        with local_stack(OUT / "registry", timeout=900) as stack:
            project = copy_example("fraud-detector", OUT, base={"image": stack.base.ref})
            print(
                f"base image {stack.base.ref} ({stack.base.digest}); project copied to {project}", flush=True
            )
            train_fraud_model(project)
            return run_steps(project)
    except Unavailable as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1


def run_steps(project: Path) -> int:
    lock = str(project / "mlenv.lock")
    steps = [
        ("lock", str(project)),
        ("lock", "--check", str(project)),
        ("build", str(project), "--tag", TAG),
        ("verify", f"docker-daemon:{TAG}", "--lock", lock),
        *(
            (
                "export",
                str(project),
                "--format",
                fmt,
                "--image",
                f"docker-daemon:{TAG}",
                "-o",
                str(OUT / name),
            )
            for fmt, name in EXPORTS
        ),
    ]
    for step in steps:
        if mlenv(*step) != 0:
            print(f"demo: `mlenv {' '.join(step)}` failed", file=sys.stderr)
            return 1
    print(f"\ndone. lock: {lock}\nimage: {TAG}\naudits: {OUT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
