"""Inputs for exporter unit tests: the golden lock, a drifted image's facts and its verify Report."""

from __future__ import annotations

import dataclasses

from mlenv import __version__
from mlenv.export import ExportContext, ImageIdentity
from mlenv.model.facts import AptFact, ArtifactFact, DistFact, EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.verify.expected import expected_facts, venv_site
from mlenv.verify.image import verify_facts
from tests.lockdata import full_lock

PLATFORM = "linux/amd64"
LOCK_DIGEST = "sha256:" + "5e" * 32
IMAGE = ImageIdentity(
    reference="docker-daemon:fraud:drifted", config_digest="sha256:" + "c0" * 32, manifest_digest=None
)


def drifted_facts(lock: Lock) -> EnvFacts:
    """The lock's image with an extra apt package, pandas downgraded, a file edited and the model replaced."""
    facts = expected_facts(lock, lock_digest=LOCK_DIGEST, platform=PLATFORM)
    site = venv_site(lock)
    dists = tuple(
        DistFact(
            name=d.name,
            version="1.5.3" if d.name == "pandas" else d.version,
            site=site,
            modified_files=("pandas/__init__.py",) if d.name == "pandas" else (),
        )
        for d in facts.python_dists
    )
    return dataclasses.replace(
        facts,
        layer_diff_ids=facts.layer_diff_ids + ("sha256:" + "ab" * 32,),
        apt=facts.apt + (AptFact(name="bash-completion", version="1:2.11-6", architecture="all"),),
        python_dists=dists,
        artifacts=(ArtifactFact(path="/app/models/model.joblib", sha256="0" * 64),),
        env=(("PATH", "/opt/venv/bin:/usr/bin"),),
    )


def drifted_report(lock: Lock) -> Report:
    return verify_facts(
        lock, drifted_facts(lock), lock_digest=LOCK_DIGEST, platform=PLATFORM, subject=IMAGE.reference
    )


def lock_context(lock: Lock | None = None) -> ExportContext:
    lock = lock or full_lock()
    return ExportContext(
        lock_digest=LOCK_DIGEST, platform=PLATFORM, mlenv_version=__version__, created=lock.as_of
    )


def image_context(lock: Lock | None = None) -> ExportContext:
    lock = lock or full_lock()
    return dataclasses.replace(lock_context(lock), image=IMAGE, facts=drifted_facts(lock))
