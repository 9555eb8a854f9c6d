"""verify = compare(what the lock says, what the image holds)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from mlenv.model.facts import ConfigFact, EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.observe import Observation, inspect_image
from mlenv.observe.facts import combine
from mlenv.observe.image import open_image
from mlenv.observe.image.layerfiles import layer_steps
from mlenv.observe.limits import MAX_KEPT_FILE
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import RegistryClient
from mlenv.verify.accounting import account, base_layer_count, plan, with_files
from mlenv.verify.compare import compare
from mlenv.verify.config import base_config, built_by, expected_config
from mlenv.verify.expected import expected_facts, image_contents
from mlenv.verify.layermemo import LayerMemo
from mlenv.verify.manifest import ExpectedFile
from mlenv.verify.native import with_native_findings
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
    memo: LayerMemo | None = None,
) -> tuple[Report, Observation]:
    """Observe `reference` (any transport) and compare it with the lock.

    The observation is returned whole: its facts, and the image's identity (config and manifest
    digests) that an export names as its subject. Every file of every layer above the base is
    accounted for (verify.files); `project_dir` holds the app tree the image's copy must equal (without
    it, the app copy is reported unverified, never skipped). The layers read are remembered in `memo`
    (default: the user cache's) for this lock, and those remembered are hashed but not parsed again."""
    chosen = platform or lock.target.platforms[0]
    models = [m.target for m in lock.models if m.strategy == "bake"]
    # The baked models' bytes are kept for the model reader, which says which library version wrote the
    # image's copy; one larger than a kept file may be is judged by its sha256 and the lock's record.
    readable = frozenset(
        m.target for m in lock.models if m.strategy == "bake" and (m.size or 0) <= MAX_KEPT_FILE
    )
    registry = RegistryClient(docker_config)
    memo = memo if memo is not None else LayerMemo()
    with open_image(reference, docker_config=docker_config, platform=chosen, registry=registry) as opened:
        memory = memo.for_lock(lock_digest)
        memory.prefetch(opened.diff_ids)
        # What the files must be is derived before the image is read (while dockerd exports it), so the
        # one pass keeps the few contents the checks need (generated files, byte code) and hashes the rest.
        files = plan(lock, image_contents(lock, chosen, lock_digest=lock_digest), project_dir=project_dir)
        base = base_config(lock, chosen, store=ContentStore(), registry=registry) if lock.base else None
        observed = inspect_image(
            reference,
            docker_config=docker_config,
            platform=chosen,
            artifacts=models,
            keep=combine(files.keep, readable.__contains__),
            registry=registry,
            engine=opened.engine,
            memory=memory,
        )
    config = None
    if base is not None:
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
    report = with_native_findings(report, lock, observed, platform=chosen)
    assert observed.image is not None  # an image reference always loads an image
    image = observed.image
    steps = layer_steps(image.config)
    file_drifts = account(files, image.indexes, base_layers=base_layer_count(lock, chosen), steps=steps)
    memo.remember(lock_digest, image, _content_to_remember(files.files))
    return with_files(report, file_drifts), observed


def _content_to_remember(expected: list[ExpectedFile]) -> Callable[[str, str | None], bool]:
    """Every kept content is remembered, but for a .pyc whose sha256 is the one predicted from the locked
    wheel: the pyc check accepts that on its hash before it reads content (most of the 97 MB of the
    fraud image's byte code)."""
    predicted = {f.path: f.sha256 for f in expected if f.check == "pyc" and f.sha256 is not None}
    return lambda path, sha256: sha256 is None or predicted.get(path) != sha256
