"""One lock, several platforms: what an image of one platform is built from, how its tags and the index
are named, and what a platform the lock lacks gets (exit 2, one line). Pure: no engine."""

from __future__ import annotations

import dataclasses
import json
from xml.etree import ElementTree

import pytest

from mlenv.build.index import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    index_document,
    platform_tag,
)
from mlenv.cli.common import locked_platform, locked_platforms
from mlenv.errors import BuildError, MlenvError
from mlenv.model.lock import AptPin, Lock, for_platform, platform_apt
from mlenv.model.report import Drift, Report
from mlenv.render import render_dependencies
from mlenv.verify.formats import as_junit, junit_documents
from tests.lockdata import digest, full_lock

TWO = ("linux/amd64", "linux/arm64")


def pin(name: str, architecture: str) -> AptPin:
    return AptPin(
        name=name,
        version="1.0-1",
        architecture=architecture,
        filename=f"pool/main/{name[0]}/{name}/{name}_1.0-1_{architecture}.deb",
        size=10,
        sha256=digest(hash((name, architecture)) % 1000).removeprefix("sha256:"),
        requested=True,
    )


def two_platform_lock() -> Lock:
    lock = full_lock()
    packages = (pin("curl", "amd64"), pin("curl", "arm64"), pin("tzdata", "all"), pin("libx", "arm64"))
    assert lock.base is not None
    amd = lock.base.platforms[0]
    arm = dataclasses.replace(
        amd, platform="linux/arm64", manifest_digest=digest(77), config_digest=digest(78)
    )
    return dataclasses.replace(
        lock,
        target=dataclasses.replace(lock.target, platforms=TWO),
        base=dataclasses.replace(lock.base, platforms=(amd, arm)),
        apt=dataclasses.replace(lock.apt, packages=packages),
    )


def test_each_platform_gets_its_architectures_debs_and_the_architecture_free_ones() -> None:
    lock = two_platform_lock()
    assert [(p.name, p.architecture) for p in platform_apt(lock.apt, "linux/amd64")] == [
        ("curl", "amd64"),
        ("tzdata", "all"),
    ]
    arm = for_platform(lock, "linux/arm64")
    assert arm.target.platforms == ("linux/arm64",)
    assert [(p.name, p.architecture) for p in arm.apt.packages] == [
        ("curl", "arm64"),
        ("tzdata", "all"),
        ("libx", "arm64"),
    ]
    assert arm.base == lock.base  # the label still names the digest the lock pinned


def test_a_platform_dockerfile_installs_and_checks_one_architecture() -> None:
    lock = two_platform_lock()
    amd = render_dependencies(for_platform(lock, "linux/amd64"), mlenv_version="0").decode()
    arm = render_dependencies(for_platform(lock, "linux/arm64"), mlenv_version="0").decode()
    # The check lists each name=version once: both architectures' curl would make dpkg's list differ.
    assert amd.count(" curl=1.0-1 ") == 1 and "libx" not in amd
    assert arm.count(" curl=1.0-1 ") == 1 and " libx=1.0-1 " in arm
    assert render_dependencies(for_platform(lock, "linux/amd64"), mlenv_version="0").decode() == amd
    # Each platform's stages start from its own manifest; the whole lock's Dockerfile (for buildx) from
    # the index digest the lock pinned.
    assert lock.base is not None
    assert f"@{digest(77)} AS builder" in arm and digest(3) not in arm
    assert f"@{digest(3)} AS builder" in amd
    assert f"@{lock.base.digest} AS builder" in render_dependencies(lock, mlenv_version="0").decode()


def test_a_platform_the_lock_lacks_is_refused() -> None:
    lock = two_platform_lock()
    with pytest.raises(ValueError):
        for_platform(lock, "linux/s390x")
    with pytest.raises(MlenvError, match=r"--platform linux/s390x: not a platform of the lock \(it has"):
        locked_platforms(lock, ["linux/arm64", "linux/s390x"])
    assert locked_platforms(lock, None) == TWO
    assert locked_platforms(lock, ["linux/arm64", "linux/arm64"]) == ("linux/arm64",)
    assert locked_platform(lock, None) == "linux/amd64"


def test_platform_tags() -> None:
    assert platform_tag("127.0.0.1:5000/fraud:abc", "linux/arm64") == "127.0.0.1:5000/fraud:abc-arm64"
    assert platform_tag("127.0.0.1:5000/fraud", "linux/amd64") == "127.0.0.1:5000/fraud:latest-amd64"
    assert platform_tag("fraud:1", "linux/arm/v7") == "fraud:1-arm-v7"


def test_the_index_is_sorted_and_its_type_follows_its_manifests() -> None:
    docker = {
        "linux/arm64": (DOCKER_MANIFEST, digest(2), 20),
        "linux/amd64": (DOCKER_MANIFEST, digest(1), 10),
    }
    raw, media_type = index_document(docker)
    assert media_type == DOCKER_LIST
    document = json.loads(raw)
    assert [m["platform"] for m in document["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    assert [(m["digest"], m["size"]) for m in document["manifests"]] == [(digest(1), 10), (digest(2), 20)]
    assert index_document(dict(reversed(docker.items())))[0] == raw  # the same images, the same bytes
    assert index_document({"linux/amd64": (OCI_MANIFEST, digest(1), 1)})[1] == OCI_INDEX
    with pytest.raises(BuildError, match="mixed manifest types"):
        index_document({"linux/amd64": (OCI_MANIFEST, digest(1), 1), "linux/arm64": docker["linux/arm64"]})


def test_junit_of_several_platforms_keeps_every_suite() -> None:
    drift = Drift(layer="base", kind="missing", subject="platform linux/arm64", expected="linux/arm64")
    reports = [
        Report(subject="img (linux/amd64)", layers=("base", "apt")),
        Report(subject="img (linux/arm64)", layers=("base",), drifts=(drift,)),
    ]
    merged = ElementTree.fromstring(junit_documents([as_junit(r) for r in reports]).split("\n", 1)[1])
    names = [suite.get("name") for suite in merged]
    assert names == ["mlenv verify img (linux/amd64)", "mlenv verify img (linux/arm64)"]
    assert [suite.get("failures") for suite in merged] == ["0", "1"]
