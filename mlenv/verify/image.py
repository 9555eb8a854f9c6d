"""verify = compare(what the lock says, what the image holds)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlenv.model.facts import ConfigFact, EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Drift, Report
from mlenv.observe import Observation, inspect_loaded
from mlenv.observe.facts import combine, probe_interest
from mlenv.observe.fs.rootfs import Interest
from mlenv.observe.image import LoadedImage, load_image, open_image, parse_location
from mlenv.observe.image.layerfiles import layer_steps
from mlenv.observe.image.local import LocalImage, load_local
from mlenv.observe.limits import MAX_KEPT_FILE
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import RegistryClient
from mlenv.verify.compare import compare
from mlenv.verify.layermemo import LayerMemo
from mlenv.verify.manifest import ExpectedFile
from mlenv.verify.policy import image_findings

# The expectation's modules (accounting, expected, config, native: 0.2 s to import, measured) are imported
# where they are used, after a daemon image's save is requested: dockerd exports the whole image before
# its first byte, so they load in that wait instead of before the request.
if TYPE_CHECKING:
    from mlenv.sources.engine import SaveRequest
    from mlenv.verify.accounting import Plan


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
    from mlenv.verify.expected import expected_facts

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
    requested: SaveRequest | None = None,
) -> tuple[Report, Observation]:
    """Observe `reference` (any transport) and compare it with the lock.

    The observation is returned whole: its facts, and the image's identity (config and manifest
    digests) that an export names as its subject. Every file of every layer above the base is
    accounted for (verify.files); `project_dir` holds the app tree the image's copy must equal (without
    it, the app copy is reported unverified, never skipped). The layers read are remembered in `memo`
    (default: the user cache's) for this lock, and those remembered are hashed but not parsed again.
    `requested`: the save of this daemon image, requested earlier (sources.engine.request_save)."""
    chosen = platform or lock.target.platforms[0]
    location = parse_location(reference)
    # docker:// is resolved by open_image through this client, which keeps what it fetched for the load.
    registry = RegistryClient(docker_config) if location.transport == "docker" else None
    memo = memo if memo is not None else LayerMemo()
    with open_image(
        location, docker_config=docker_config, platform=chosen, registry=registry, requested=requested
    ) as opened:
        registry = registry or RegistryClient(docker_config)
        memory = memo.for_lock(lock_digest)
        memory.prefetch(opened.diff_ids)
        # What the files must be is derived before the image is read (while dockerd exports it), so the
        # one pass keeps the few contents the checks need (generated files, byte code) and hashes the rest.
        checks = _checks(lock, chosen, lock_digest, project_dir, registry)
        loaded = load_image(
            location,
            interest=combine(probe_interest, checks.keep),
            docker_config=docker_config,
            platform=chosen,
            registry=registry,
            engine=opened.engine,
            memory=memory,
        )
    return _judge_remembering(
        lock, loaded, checks, lock_digest=lock_digest, platform=chosen, subject=reference, memo=memo
    )


def verify_platforms(
    lock: Lock,
    reference: str,
    *,
    lock_digest: str,
    platform: str | None = None,
    docker_config: str | None = None,
    project_dir: Path | None = None,
    requested: SaveRequest | None = None,
) -> list[Report]:
    """verify_image for each platform the image must reproduce: `platform` when given; a multi-platform
    lock's every platform against a registry index (a locked platform the index lacks, or one the lock
    does not have, is a drift); else the platform of the one image (its own architecture picks the
    lock's entry, so an arm64 image is not judged as amd64's). `requested`: as verify_image's."""

    def one(chosen: str | None) -> Report:
        report, _ = verify_image(
            lock,
            reference,
            lock_digest=lock_digest,
            platform=chosen,
            docker_config=docker_config,
            project_dir=project_dir,
            requested=requested,
        )
        return report

    if platform is not None or len(lock.target.platforms) == 1:
        return [one(platform)]
    listed = _index_platforms(reference, docker_config)
    if listed is None:
        own = _image_platform(reference, docker_config, lock.target.platforms)
        return [one(own if own in lock.target.platforms else lock.target.platforms[0])]
    reports = []
    for wanted in lock.target.platforms:
        subject = f"{reference} ({wanted})"
        if wanted not in listed:
            drift = Drift(layer="base", kind="missing", subject=f"platform {wanted}", expected=wanted)
            reports.append(Report(subject=subject, layers=("base",), drifts=(drift,)))
            continue
        reports.append(dataclasses.replace(one(wanted), subject=subject))
    for extra in sorted(set(listed) - set(lock.target.platforms)):
        drift = Drift(layer="base", kind="extra", subject=f"platform {extra}", actual=extra)
        reports.append(Report(subject=f"{reference} ({extra})", layers=("base",), drifts=(drift,)))
    return reports


def _index_platforms(reference: str, docker_config: str | None) -> list[str] | None:
    """The platforms a registry index lists; None for any other image (one manifest, or not docker://)."""
    location = parse_location(reference)
    if location.transport != "docker":
        return None
    from mlenv.sources.registry import INDEX_TYPES, ImageReference, platform_of

    ref = ImageReference.parse(location.target)
    top = RegistryClient(docker_config).get_manifest(ref)
    if top.media_type not in INDEX_TYPES and "manifests" not in top.data:
        return None
    entries = top.data.get("manifests")
    return [platform_of(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _image_platform(reference: str, docker_config: str | None, locked: tuple[str, ...]) -> str | None:
    """The os/architecture of a daemon image, or which of the `locked` platforms a registry image is
    (its config says); None for an image file, or a registry image of none of them."""
    location = parse_location(reference)
    if location.transport == "docker-daemon":
        from mlenv.sources.engine import connect

        with connect() as engine:
            return engine.platform(location.target)
    if location.transport == "docker":
        from mlenv.errors import ImageError
        from mlenv.sources.registry import ImageReference

        client, ref = RegistryClient(docker_config), ImageReference.parse(location.target)
        for platform in locked:
            try:
                client.resolve(ref, platform)  # refuses a single image of another platform
            except ImageError:
                continue
            return platform
    return None


def verify_local(
    lock: Lock,
    image: LocalImage,
    *,
    lock_digest: str,
    platform: str | None = None,
    project_dir: Path | None = None,
    memo: LayerMemo | None = None,
) -> tuple[Report, Observation] | None:
    """Verify the image `mlenv build` just loaded, from its own files: the config and top layers it
    wrote, and the layers below them as remembered for this lock by diff_id (the engine's content
    address of a layer it holds), not read again. None when one of those is not remembered: the caller
    verifies through the engine (verify_image), which remembers them for the next build.

    Only the build's own check trusts a remembered layer unread: the layers are the ones this engine
    holds under the dependency image mlenv built, and the image it loaded has exactly these diff_ids
    (the build checks the ID). `mlenv verify` reads every layer."""
    chosen = platform or lock.target.platforms[0]
    memo = memo if memo is not None else LayerMemo()
    memory = memo.for_lock(lock_digest)
    checks = _checks(lock, chosen, lock_digest, project_dir, RegistryClient())
    loaded = load_local(image, combine(probe_interest, checks.keep), memory.known)
    if loaded is None:
        return None
    subject = f"docker-daemon:{image.name}"
    return _judge_remembering(
        lock, loaded, checks, lock_digest=lock_digest, platform=chosen, subject=subject, memo=memo
    )


@dataclass(frozen=True, kw_only=True)
class _Checks:
    files: Plan
    base: Mapping[str, Any] | None
    models: list[str]
    keep: Interest


def _checks(
    lock: Lock, platform: str, lock_digest: str, project_dir: Path | None, registry: RegistryClient
) -> _Checks:
    """What the image must hold, derived from the lock alone (and the base's config, by its digest)."""
    from mlenv.verify.accounting import plan
    from mlenv.verify.config import base_config
    from mlenv.verify.expected import image_contents

    models = [m.target for m in lock.models if m.strategy == "bake"]
    # The baked models' bytes are kept for the model reader, which says which library version wrote the
    # image's copy; one larger than a kept file may be is judged by its sha256 and the lock's record.
    readable = frozenset(
        m.target for m in lock.models if m.strategy == "bake" and (m.size or 0) <= MAX_KEPT_FILE
    )
    files = plan(lock, image_contents(lock, platform, lock_digest=lock_digest), project_dir=project_dir)
    base = base_config(lock, platform, store=ContentStore(), registry=registry) if lock.base else None
    return _Checks(files=files, base=base, models=models, keep=combine(files.keep, readable.__contains__))


def _judge_remembering(
    lock: Lock,
    loaded: LoadedImage,
    checks: _Checks,
    *,
    lock_digest: str,
    platform: str,
    subject: str,
    memo: LayerMemo,
) -> tuple[Report, Observation]:
    """The image's facts observed and judged, while the layers just read are written to `memo` in a
    worker thread (0.4 s for the fraud image's 45 MB, half of it writing files; nothing changes a layer
    index once it is loaded). A failure to write is raised once the judging is done."""
    failed: list[BaseException] = []

    def write() -> None:
        try:
            memo.remember(lock_digest, loaded, _content_to_remember(checks.files.files))
        except BaseException as error:  # handed to the caller's thread
            failed.append(error)

    worker = threading.Thread(target=write, name="mlenv-remember", daemon=True)
    worker.start()
    try:
        observed = inspect_loaded(loaded, artifacts=checks.models)
        judged = _judge(lock, observed, checks, lock_digest=lock_digest, platform=platform, subject=subject)
    finally:
        worker.join()
    if failed:
        raise failed[0]
    return judged


def _judge(
    lock: Lock,
    observed: Observation,
    checks: _Checks,
    *,
    lock_digest: str,
    platform: str,
    subject: str,
) -> tuple[Report, Observation]:
    from mlenv.verify.accounting import account, base_layer_count, with_files
    from mlenv.verify.config import built_by, expected_config
    from mlenv.verify.native import with_native_findings

    config = None
    if checks.base is not None:
        found = observed.facts.config
        config = expected_config(
            lock,
            lock_digest=lock_digest,
            platform=platform,
            base=checks.base,
            built_by=built_by(found.labels) if found is not None else None,
        )
    report = verify_facts(
        lock, observed.facts, lock_digest=lock_digest, platform=platform, subject=subject, config=config
    )
    report = dataclasses.replace(report, findings=image_findings(observed.facts, observed.fs))
    report = with_native_findings(report, lock, observed, platform=platform)
    assert observed.image is not None  # an image reference always loads an image
    image = observed.image
    steps = layer_steps(image.config)
    file_drifts = account(
        checks.files, image.indexes, base_layers=base_layer_count(lock, platform), steps=steps
    )
    return with_files(report, file_drifts), observed


def _content_to_remember(expected: list[ExpectedFile]) -> Callable[[str, str | None], bool]:
    """Every kept content is remembered, but for a .pyc whose sha256 is the one predicted from the locked
    wheel: the pyc check accepts that on its hash before it reads content (most of the 97 MB of the
    fraud image's byte code)."""
    predicted = {f.path: f.sha256 for f in expected if f.check == "pyc" and f.sha256 is not None}
    return lambda path, sha256: sha256 is None or predicted.get(path) != sha256
