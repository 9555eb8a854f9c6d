"""The drifted image the export integration tests render: the session's good fraud image plus drift."""

from __future__ import annotations

import pytest

from tests.helpers import Built, derive_image, lock_tag
from tools.localbase.dockerd import Daemon

# Two drifts a reviewer must see: a file of an installed package edited, the baked model removed.
DRIFT_LINES = [
    "RUN echo '# patched in production' >> /opt/venv/lib/python3.11/site-packages/pandas/__init__.py",
    "RUN rm /app/models/model.joblib",
]


@pytest.fixture(scope="session")
def drifted_image(fraud_image: Built, docker_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    tag = lock_tag("fraud", fraud_image.lock, "export-drifted")
    return derive_image(
        docker_daemon, tmp_path_factory.mktemp("export-drifted"), fraud_image.tag, tag, DRIFT_LINES
    )
