"""The labels mlenv puts on every image it builds: written by render, expected by verify, shown by export."""

from __future__ import annotations

LABEL_LOCK = "dev.mlenv.lock.sha256"  # the sha256 of the lockfile the image was built from
LABEL_VERSION = "dev.mlenv.version"
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_BASE_NAME = "org.opencontainers.image.base.name"
LABEL_BASE_DIGEST = "org.opencontainers.image.base.digest"
LABEL_DRIVER_FLOOR = "dev.mlenv.cuda.driver-floor"  # the lowest NVIDIA driver the locked CUDA stack runs on
