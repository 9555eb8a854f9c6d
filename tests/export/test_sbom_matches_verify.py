"""An SBOM lists exactly what verify expects the image to hold: the CycloneDX components and the SPDX
packages, read back from the exported JSON, against verify's expected facts for the same lock."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from mlenv.export import export
from mlenv.lockfile import loads
from mlenv.model.facts import CudaComponent, EnvFacts
from mlenv.model.lock import Lock, LockedModel, PythonPin
from mlenv.verify.expected import expected_facts
from tests.export.data import LOCK_DIGEST, PLATFORM, lock_context
from tests.lockdata import full_lock

GOLDEN_LOCK = Path(__file__).resolve().parent.parent / "fixtures" / "golden" / "mlenv.lock"


def golden_file_lock() -> Lock:
    return loads(GOLDEN_LOCK.read_text(), path=str(GOLDEN_LOCK))


def varied_lock() -> Lock:
    """The golden lock where the closure upgrades a base package, a pin comes from another index, the
    CUDA runtime is locked, and one model is downloaded at start (so it is no file of the image)."""
    lock = full_lock()
    libc = dataclasses.replace(lock.apt.packages[0], name="libc6", version="2.36-9+deb12u7", requested=False)
    wheel = dataclasses.replace(
        lock.python.packages[0].wheels[0], name="torch-2.3.1+cu121-cp311-cp311-manylinux1_x86_64.whl"
    )
    torch = PythonPin(
        name="torch",
        version="2.3.1+cu121",
        index="https://download.pytorch.org/whl/cu121",
        requested=True,
        wheels=(wheel,),
    )
    cublas = CudaComponent(name="cublas", version="12.1.3.1", source="wheel:nvidia-cublas-cu12")
    downloaded = LockedModel(
        source="https://models.example/m.bin",
        target="/srv/models/m.bin",
        strategy="download",
        sha256="1" * 64,
    )
    return dataclasses.replace(
        lock,
        apt=dataclasses.replace(lock.apt, packages=(*lock.apt.packages, libc)),
        python=dataclasses.replace(lock.python, packages=(*lock.python.packages, torch)),
        cuda=dataclasses.replace(lock.cuda, components=(*lock.cuda.components, cublas)),
        models=(*lock.models, downloaded),
    )


LOCKS = {"golden": full_lock, "golden-file": golden_file_lock, "varied": varied_lock}


def expected_packages(
    lock: Lock, facts: EnvFacts, platform: str = PLATFORM
) -> dict[str, set[tuple[str, ...]]]:
    """verify's expectation in the SBOM's terms; models fetched at start are components but no files."""
    runtime = {(m.target, m.sha256) for m in lock.models if m.strategy != "bake"}
    bases = [p.manifest_digest for p in lock.base.platforms if p.platform == platform] if lock.base else []
    return {
        "deb": {(p.name, p.version, p.architecture) for p in facts.apt},
        "pypi": {(d.name, d.version) for d in facts.python_dists},
        # An SBOM names the CUDA runtime "cuda-runtime": "runtime" alone would name nothing.
        "cuda": {("cuda-runtime" if c.name == "runtime" else c.name, c.version) for c in facts.cuda},
        "model": {(a.path, a.sha256) for a in facts.artifacts} | runtime,
        "base-image": {(digest,) for digest in bases},
    }


def _add(found: dict[str, set[tuple[str, ...]]], purl: str | None, *, name: str, sha256: str | None) -> None:
    if purl is None:  # only a model has none: it is named by its path and sha256
        assert sha256 is not None, name
        found["model"].add((name, sha256))
        return
    parsed = PackageURL.from_string(purl)
    if parsed.type == "deb":
        found["deb"].add((parsed.name, parsed.version, parsed.qualifiers["arch"]))
    elif parsed.type == "pypi":
        found["pypi"].add((parsed.name, parsed.version))
    elif parsed.type == "generic" and parsed.namespace == "nvidia":
        found["cuda"].add((parsed.name, parsed.version))
    elif parsed.type == "oci":
        found["base-image"].add((parsed.version,))
    else:
        raise AssertionError(f"a component verify knows nothing of: {purl}")


def _empty() -> dict[str, set[tuple[str, ...]]]:
    return {"deb": set(), "pypi": set(), "cuda": set(), "model": set(), "base-image": set()}


def _walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        yield from _walk(component.get("components", []))


def cyclonedx_packages(bom: dict[str, Any]) -> dict[str, set[tuple[str, ...]]]:
    found = _empty()
    components = list(_walk(bom["components"]))
    for c in components:
        sha256 = next((h["content"] for h in c.get("hashes", []) if h["alg"] == "SHA-256"), None)
        _add(found, c.get("purl"), name=c["name"], sha256=sha256)
    # Nothing is listed twice: a set would hide a duplicate.
    assert sum(len(v) for v in found.values()) == len(components)
    return found


def spdx_packages(document: dict[str, Any]) -> dict[str, set[tuple[str, ...]]]:
    found = _empty()
    packages = [p for p in document["packages"] if p["SPDXID"] != "SPDXRef-image"]
    for p in packages:
        refs = p.get("externalRefs", [])
        purl = next((r["referenceLocator"] for r in refs if r["referenceType"] == "purl"), None)
        sums = p.get("checksums", [])
        sha256 = next((c["checksumValue"] for c in sums if c["algorithm"] == "SHA256"), None)
        _add(found, purl, name=p["name"], sha256=sha256)
    assert sum(len(v) for v in found.values()) == len(packages)
    return found


@pytest.mark.parametrize("which", LOCKS)
def test_cyclonedx_components_are_verify_s_expected_facts(which: str) -> None:
    lock = LOCKS[which]()
    facts = expected_facts(lock, lock_digest=LOCK_DIGEST, platform=PLATFORM)
    bom = json.loads(export("cyclonedx", lock, None, lock_context(lock)))
    assert cyclonedx_packages(bom) == expected_packages(lock, facts)
    sources = {
        p["value"]
        for c in _walk(bom["components"])
        for p in c.get("properties", [])
        if p["name"] == "mlenv:source" and c.get("purl", "").startswith("pkg:generic/nvidia/")
    }
    assert sources == {c.source for c in facts.cuda}


@pytest.mark.parametrize("which", LOCKS)
def test_spdx_packages_are_verify_s_expected_facts(which: str) -> None:
    lock = LOCKS[which]()
    facts = expected_facts(lock, lock_digest=LOCK_DIGEST, platform=PLATFORM)
    document = json.loads(export("spdx", lock, None, lock_context(lock)))
    assert spdx_packages(document) == expected_packages(lock, facts)


def test_the_comparison_sees_a_package_the_sbom_left_out() -> None:
    """The check above can fail: drop one base package from the BOM and it no longer matches."""
    lock = full_lock()
    facts = expected_facts(lock, lock_digest=LOCK_DIGEST, platform=PLATFORM)
    bom = json.loads(export("cyclonedx", lock, None, lock_context(lock)))
    base = next(c for c in bom["components"] if c["type"] == "container")
    base["components"] = [c for c in base["components"] if c["name"] != "libc6"]
    found, want = cyclonedx_packages(bom), expected_packages(lock, facts)
    assert want["deb"] - found["deb"] == {("libc6", "2.36-9+deb12u4", "amd64")}


def test_an_upgraded_base_package_is_listed_once_at_the_locked_version() -> None:
    lock = varied_lock()
    bom = json.loads(export("cyclonedx", lock, None, lock_context(lock)))
    libc = [c["version"] for c in _walk(bom["components"]) if c["name"] == "libc6"]
    assert libc == ["2.36-9+deb12u7"]
    facts = expected_facts(lock, lock_digest=LOCK_DIGEST, platform=PLATFORM)
    assert [p.version for p in facts.apt if p.name == "libc6"] == ["2.36-9+deb12u7"]


def test_a_pin_whose_marker_excludes_the_platform_is_expected_by_neither() -> None:
    """nvidia-cudnn-cu12 is locked for x86_64 only: pip skips it on arm64, so verify must not expect it
    there and the arm64 SBOM must not list it."""
    lock = full_lock()
    assert lock.base is not None
    arm = dataclasses.replace(
        lock.base.platforms[0], platform="linux/arm64", manifest_digest="sha256:" + "a1" * 32
    )
    base = dataclasses.replace(lock.base, platforms=(*lock.base.platforms, arm))
    lock = dataclasses.replace(lock, base=base)
    on_arm = expected_facts(lock, lock_digest=LOCK_DIGEST, platform="linux/arm64")
    on_amd = expected_facts(lock, lock_digest=LOCK_DIGEST, platform=PLATFORM)
    assert [d.name for d in on_arm.python_dists] == ["pandas"]
    assert [d.name for d in on_amd.python_dists] == ["nvidia-cudnn-cu12", "pandas"]
    context = dataclasses.replace(lock_context(lock), platform="linux/arm64")
    bom = json.loads(export("cyclonedx", lock, None, context))
    assert cyclonedx_packages(bom) == expected_packages(lock, on_arm, "linux/arm64")
    pandas = next(c for c in bom["components"] if c["name"] == "pandas")
    assert pandas["hashes"][0]["content"] == "a" * 64  # the aarch64 wheel
