"""Images for the export integration tests, built once per session on the real engine.

The same pattern as tests/test_build_verify.py (the fraud detector locked and built with `mlenv
build`, drift made by a few Dockerfile lines on top), under tags of its own so parallel sessions
of the two modules never fight over one tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import copy_example, run_cli, train_fraud_model
from tests.infra.docker import Daemon
from tests.infra.images import BaseImage

GOOD = "mlenv-test/fraud:export-good"
DRIFTED = "mlenv-test/fraud:export-drifted"
# Two drifts a reviewer must see: a file of an installed package edited, the baked model removed.
DRIFT_LINES = [
    "RUN echo '# patched in production' >> /opt/venv/lib/python3.11/site-packages/pandas/__init__.py",
    "RUN rm /app/models/model.joblib",
]


@dataclass(frozen=True)
class Built:
    project: Path
    lock: Path
    tag: str


@pytest.fixture(scope="session")
def good_image(base_image_python: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Built:
    project = copy_example(
        "fraud-detector", tmp_path_factory.mktemp("export-good"), base={"image": base_image_python.ref}
    )
    train_fraud_model(project)
    for args in (("lock", str(project)), ("build", str(project), "--tag", GOOD)):
        result = run_cli(*args)
        assert result.code == 0, f"mlenv {' '.join(args)}: {result.stderr[-2000:]}"
    return Built(project=project, lock=project / "mlenv.lock", tag=GOOD)


@pytest.fixture(scope="session")
def drifted_image(good_image: Built, docker_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("export-drifted")
    (context / "Dockerfile").write_text(
        "\n".join([f"FROM {good_image.tag}", "USER root", *DRIFT_LINES]) + "\n"
    )
    docker_daemon.client.images.build(
        path=str(context), tag=DRIFTED, rm=True, forcerm=True, network_mode="none"
    )
    return DRIFTED
