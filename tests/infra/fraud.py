"""The fraud detector locked and built once per session with `mlenv build` on the real engine.

Verify, export and other integration tests read this one good image; drifted images are made
from it by a few Dockerfile lines (see `derive_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import copy_example, run_cli, train_fraud_model
from tests.infra.docker import Daemon
from tests.infra.images import BaseImage

FRAUD_TAG = "mlenv-test/fraud:good"


@dataclass(frozen=True)
class Built:
    project: Path
    lock: Path
    tag: str


def lock_and_build(project: Path, tag: str) -> None:
    for args in (("lock", str(project)), ("build", str(project), "--tag", tag)):
        result = run_cli(*args)
        assert result.code == 0, f"mlenv {' '.join(args)}: {result.stderr[-2000:]}"


def derive_image(daemon: Daemon, context: Path, base_tag: str, tag: str, lines: list[str]) -> str:
    """An image made of a few Dockerfile lines (as root) on top of `base_tag`, built with no network."""
    (context / "Dockerfile").write_text("\n".join([f"FROM {base_tag}", "USER root", *lines]) + "\n")
    daemon.client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none")
    return tag


@pytest.fixture(scope="session")
def fraud_image(base_image_python: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Built:
    project = copy_example("fraud-detector", tmp_path_factory.mktemp("fraud"), base={"image": base_image_python.ref})
    train_fraud_model(project)
    lock_and_build(project, FRAUD_TAG)
    return Built(project=project, lock=project / "mlenv.lock", tag=FRAUD_TAG)
