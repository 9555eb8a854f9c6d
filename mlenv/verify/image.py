"""verify = compare(what the lock says, what the image holds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlenv.model.facts import ConfigFact, EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.observe import Observation, inspect_image
from mlenv.observe.image import check_present
from mlenv.observe.image.layerfiles import layer_steps
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import RegistryClient
from mlenv.verify.accounting import account, base_layer_count, plan, with_files
from mlenv.verify.compare import compare
from mlenv.verify.config import base_config, built_by, expected_config
from mlenv.verify.expected import expected_facts, image_contents
from mlenv.verify.policy import image_findings


def verify_facts(
    lock: Lock,
    actual: EnvFacts,
    *,
    lock_digest: str,
    platform: str,
    subject: str,
    config: ConfigFact | None = None,
) -> Report:
    """`config`: the image config the lock determines (verify.config); None leaves the config uncompared."""
    expected = expected_facts(lock, lock_digest=lock_digest, platform=platform)
    if config is not None:
        expected = dataclasses.replace(expected, config=config)
    return compare(expected, actual, subject=subject)


def verify_image(
    lock: Lock,
    reference: str,
    *,
    lock_digest: str,
    platform: str | None = None,
    docker_config: str | None = None,
    project_dir: Path | None = None,
) -> tuple[Report, Observation]:
    """Observe `reference` (any transport) and compare it with the lock.

    The observation is returned whole: its facts, and the image's identity (config and manifest
    digests) that an export names as its subject. Every file of every layer above the base is
    accounted for (verify.files); `project_dir` holds the app tree the image's copy must equal (without
    it, the app copy is reported unverified, never skipped)."""
    chosen = platform or lock.target.platforms[0]
    models = [m.target for m in lock.models if m.strategy == "bake"]
    registry = RegistryClient(docker_config)
    check_present(reference, docker_config=docker_config, platform=chosen, registry=registry)
    # What the files must be is derived before the image is read, so the one pass keeps the few
    # contents the checks need (generated files, byte code) and hashes the rest.
    files = plan(lock, image_contents(lock, chosen, lock_digest=lock_digest), project_dir=project_dir)
    observed = inspect_image(
        reference,
        docker_config=docker_config,
        platform=chosen,
        artifacts=models,
        keep=files.keep,
        registry=registry,
    )
    config = None
    if lock.base is not None:
        base = base_config(lock, chosen, store=ContentStore(), registry=registry)
        found = observed.facts.config
        config = expected_config(
            lock,
            lock_digest=lock_digest,
            platform=chosen,
            base=base,
            built_by=built_by(found.labels) if found is not None else None,
        )
    report = verify_facts(
        lock, observed.facts, lock_digest=lock_digest, platform=chosen, subject=reference, config=config
    )
    report = dataclasses.replace(report, findings=image_findings(observed.facts, observed.fs))
    assert observed.image is not None  # an image reference always loads an image
    image = observed.image
    steps = layer_steps(image.config)
    file_drifts = account(files, image.indexes, base_layers=base_layer_count(lock, chosen), steps=steps)
    return with_files(report, file_drifts), observed
