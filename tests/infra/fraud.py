"""The fraud detector locked and built once per session with `mlenv build` on the real engine.

Verify, export and other integration tests read this one good image; drifted images are made from it
by a few Dockerfile lines (tests.helpers.derive_image). Its tag is named by its lock's sha256, so two
sessions sharing one engine (each locks against its own registry port) never build over each other.
"""

from __future__ import annotations

import pytest

from tests.helpers import Built, lock_and_build
from tests.infra import required
from tools.localbase.images import BaseImage
from tools.localbase.project import copy_example, train_fraud_model


@pytest.fixture(scope="session")
def fraud_image(base_image_python: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Built:
    project = copy_example(
        "fraud-detector", tmp_path_factory.mktemp("fraud"), base={"image": base_image_python.ref}
    )
    with required():
        train_fraud_model(project)
    tag = lock_and_build(project, "fraud")
    return Built(project=project, lock=project / "mlenv.lock", tag=tag)
