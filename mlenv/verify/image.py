"""verify = compare(what the lock says, what the image holds)."""

from __future__ import annotations

from mlenv.model.facts import EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.observe import Observation, inspect_image
from mlenv.verify.compare import compare
from mlenv.verify.expected import expected_facts


def verify_facts(lock: Lock, actual: EnvFacts, *, lock_digest: str, platform: str, subject: str) -> Report:
    return compare(expected_facts(lock, lock_digest=lock_digest, platform=platform), actual, subject=subject)


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
    report = verify_facts(lock, observed.facts, lock_digest=lock_digest, platform=chosen, subject=reference)
    return report, observed
