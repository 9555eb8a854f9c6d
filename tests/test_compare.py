"""The comparison engine: each kind of drift is found, named, and nothing else is reported."""

from __future__ import annotations

import dataclasses

from mlenv.model.facts import AptFact, ArtifactFact, CudaComponent, DistFact, EnvFacts, InterpreterFact
from mlenv.model.report import Drift
from mlenv.verify.compare import compare, drift_line

SITE = "/opt/venv/lib/python3.11/site-packages"
EXPECTED = EnvFacts(
    layer_diff_ids=("sha256:a", "sha256:b"),
    os_id="debian",
    os_version="12",
    architecture="amd64",
    glibc="2.36",
    interpreters=(InterpreterFact(path="/usr/bin/python3.11", version="3.11.2"),),
    apt=(
        AptFact(name="libgomp1", version="12.2.0-14", architecture="amd64"),
        AptFact(name="curl", version="7.88.1-10+deb12u6", architecture="amd64"),
    ),
    python_dists=(
        DistFact(name="pandas", version="2.0.3", site=SITE),
        DistFact(name="scikit-learn", version="1.4.2", site=SITE),
    ),
    cuda=(CudaComponent(name="cudnn", version="8.9.2.26", source="wheel"),),
    artifacts=(ArtifactFact(path="/app/models/model.joblib", sha256="f" * 64),),
    labels=(("dev.mlenv.lock.sha256", "sha256:lock"),),
)


def lines(actual: EnvFacts) -> list[str]:
    return [drift_line(d) for d in compare(EXPECTED, actual, subject="img").drifts]


def test_identical_facts_have_no_drift() -> None:
    system = DistFact(name="x", version="1", site="/usr/lib/python3/dist-packages")
    actual = dataclasses.replace(
        EXPECTED,
        layer_diff_ids=EXPECTED.layer_diff_ids + ("sha256:app",),
        python_dists=EXPECTED.python_dists + (system,),
    )
    report = compare(EXPECTED, actual, subject="img")
    assert report.ok and "python-files" in report.layers


def test_seed_failures_are_named() -> None:
    actual = dataclasses.replace(
        EXPECTED,
        python_dists=(
            DistFact(name="pandas", version="1.5.3", site=SITE),
            DistFact(name="scikit-learn", version="1.3.2", site=SITE),
        ),
    )
    assert lines(actual) == [
        "python: pandas: version: expected 2.0.3, found 1.5.3",
        "python: scikit-learn: version: expected 1.4.2, found 1.3.2",
    ]


def test_other_base_is_named_by_layer() -> None:
    actual = dataclasses.replace(EXPECTED, layer_diff_ids=("sha256:a", "sha256:z", "sha256:app"))
    assert lines(actual) == ["base: layer 2 of 2: layers: expected sha256:b, found sha256:z"]


def test_apt_extra_missing_version_arch() -> None:
    actual = dataclasses.replace(
        EXPECTED,
        apt=(
            AptFact(name="libgomp1", version="12.2.0-14", architecture="i386"),
            AptFact(name="curl", version="7.88.1-10", architecture="amd64"),
            AptFact(name="vim", version="2:9.0", architecture="amd64"),
        ),
    )
    assert lines(actual) == [
        "apt: curl:amd64: version: expected 7.88.1-10+deb12u6, found 7.88.1-10",
        "apt: libgomp1: arch: expected amd64 12.2.0-14, found i386 12.2.0-14",
        "apt: vim:amd64: extra (found 2:9.0, not in the lock)",
    ]


def test_record_mismatch_and_missing_model() -> None:
    actual = dataclasses.replace(
        EXPECTED,
        python_dists=(
            DistFact(name="pandas", version="2.0.3", site=SITE, modified_files=("pandas/__init__.py",)),
            DistFact(name="scikit-learn", version="1.4.2", site=SITE, missing_files=("sklearn/x.py",)),
        ),
        artifacts=(),
    )
    assert lines(actual) == [
        "python-files: pandas: pandas/__init__.py: modified (hash in RECORD; found different content)",
        "python-files: scikit-learn: sklearn/x.py: deleted (listed in RECORD; found nothing)",
        f"models: /app/models/model.joblib: missing (expected {'f' * 64})",
    ]


def test_interpreter_cuda_labels_os() -> None:
    actual = dataclasses.replace(
        EXPECTED,
        os_version="11",
        interpreters=(InterpreterFact(path="/usr/bin/python3.11", version="3.11.9"),),
        cuda=(),
        labels=(),
    )
    assert lines(actual) == [
        "os: os-version: version: expected 12, found 11",
        "python-interpreter: /usr/bin/python3.11: version: expected 3.11.2, found 3.11.9",
        "cuda: cudnn: missing (expected 8.9.2.26)",
        "labels: dev.mlenv.lock.sha256: missing (expected sha256:lock)",
    ]


def test_drifts_carry_their_parts_as_fields() -> None:
    actual = dataclasses.replace(
        EXPECTED,
        apt=(
            AptFact(name="libgomp1", version="12.2.0-14", architecture="i386"),
            AptFact(name="curl", version="7.88.1-10+deb12u6", architecture="amd64"),
            AptFact(name="vim", version="2:9.0", architecture="amd64"),
        ),
        python_dists=(
            DistFact(name="pandas", version="2.0.3", site=SITE, modified_files=("pandas/__init__.py",)),
            DistFact(name="scikit-learn", version="1.4.2", site=SITE),
        ),
    )
    drifts = compare(EXPECTED, actual, subject="img").drifts
    assert drifts == (
        Drift(
            layer="apt",
            kind="arch",
            subject="libgomp1",
            architecture="amd64",
            expected="12.2.0-14",
            actual_architecture="i386",
            actual="12.2.0-14",
        ),
        Drift(layer="apt", kind="extra", subject="vim", architecture="amd64", actual="2:9.0"),
        Drift(layer="python-files", kind="modified", subject="pandas", file="pandas/__init__.py"),
    )
