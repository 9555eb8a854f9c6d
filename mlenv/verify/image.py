"""verify = compare(what the lock says, what the image holds)."""

from __future__ import annotations

import dataclasses

from mlenv.model.facts import ConfigFact, EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.observe import Observation, inspect_image
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import RegistryClient
from mlenv.verify.compare import compare
from mlenv.verify.config import base_config, built_by, expected_config
from mlenv.verify.expected import expected_facts
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
) -> tuple[Report, Observation]:
    """Observe `reference` (any transport) and compare it with the lock.

    The observation is returned whole: its facts, and the image's identity (config and manifest
    digests) that an export names as its subject."""
    chosen = platform or lock.target.platforms[0]
    models = [m.target for m in lock.models if m.strategy == "bake"]
    observed = inspect_image(reference, docker_config=docker_config, platform=chosen, artifacts=models)
    config = None
    if lock.base is not None:
        base = base_config(lock, chosen, store=ContentStore(), registry=RegistryClient(docker_config))
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
    return report, observed
