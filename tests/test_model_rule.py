"""The producer rule (model/producers.py) and how a lock records what a model file says of itself.

Pure: facts are written out here as the reader reports them; tests/test_model_producers.py makes real
models with real libraries and runs the rule through `mlenv lock` and `mlenv verify`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from mlenv.errors import LockfileError, SpecError
from mlenv.lockfile import dumps, loads
from mlenv.model.facts import ArtifactFact, DistFact, EnvFacts
from mlenv.model.lock import LockedModel
from mlenv.model.lockcheck import first_problem
from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.model.producers import ONNX_RUNTIME, producer_problems
from mlenv.model.schema import first_error
from mlenv.model.spec import Spec
from mlenv.resolve.freshness import stale_reasons
from mlenv.spec import load_spec, spec_hash
from mlenv.verify.compare import compare, drift_line
from tests.lockdata import full_lock

SKLEARN_152 = ModelFacts(
    format="joblib",
    producers=(Producer(library="lightgbm"), Producer(library="scikit-learn", version="1.5.2")),
    imports=("sklearn.pipeline.Pipeline",),
)


def sklearn(version: str) -> ModelFacts:
    return dataclasses.replace(SKLEARN_152, producers=(Producer(library="scikit-learn", version=version),))


def onnx(ir: int, opset: int) -> ModelFacts:
    return ModelFacts(
        format="onnx",
        producers=(Producer(library="skl2onnx", version="1.17.0"),),
        details=(("ir_version", str(ir)), ("opset:ai.onnx", str(opset))),
    )


# ---------------------------------------------------------------------------- the rule


def test_the_same_release_passes_and_a_minor_step_is_refused_with_both_versions() -> None:
    assert producer_problems(sklearn("1.4.2"), {"scikit-learn": "1.4.2"}) == ()
    (problem,) = producer_problems(sklearn("1.5.2"), {"scikit-learn": "1.4.2"})
    assert problem.severity == "refuse"
    assert problem.text == "written by scikit-learn 1.5.2; the lock pins scikit-learn 1.4.2"
    assert (problem.written, problem.pinned) == ("1.5.2", "1.4.2")
    (major,) = producer_problems(sklearn("2.0.0"), {"scikit-learn": "1.4.2"})
    assert major.severity == "refuse"


def test_a_patch_difference_is_a_warning() -> None:
    (problem,) = producer_problems(sklearn("1.4.1"), {"scikit-learn": "1.4.2"})
    assert problem.severity == "warn" and "1.4.1" in problem.text and "1.4.2" in problem.text


def test_a_producer_not_pinned_is_refused() -> None:
    (problem,) = producer_problems(sklearn("1.4.2"), {"pandas": "2.0.3"})
    assert problem.severity == "refuse"
    assert problem.text == "written by scikit-learn 1.4.2; scikit-learn is not in the lock"


def test_accept_producer_lets_exactly_the_version_it_names_through() -> None:
    pins = {"scikit-learn": "1.4.2"}
    assert producer_problems(sklearn("1.5.2"), pins, accepted={"scikit-learn": "1.5.2"}) == ()
    (again,) = producer_problems(sklearn("1.6.0"), pins, accepted={"scikit-learn": "1.5.2"})
    assert again.severity == "refuse" and "1.6.0" in again.text
    (stale,) = producer_problems(sklearn("1.4.2"), pins, accepted={"xgboost": "2.0.0"})
    assert stale.severity == "warn" and "xgboost" in stale.text


def test_a_format_without_a_producer_version_warns_but_still_needs_its_library() -> None:
    facts = ModelFacts(format="safetensors", producers=(Producer(library="torch"),), note="no version")
    (warning,) = producer_problems(facts, {"torch": "2.3.1"})
    assert warning.severity == "warn" and "records no torch version" in warning.text
    (refusal,) = producer_problems(facts, {})
    assert refusal.severity == "refuse" and "torch is not in the lock" in refusal.text


def test_an_unsafe_pickle_is_refused_naming_its_globals() -> None:
    facts = dataclasses.replace(sklearn("1.4.2"), imports=("os.system",), unsafe=("os.system",))
    (problem,) = producer_problems(facts, {"scikit-learn": "1.4.2"})
    assert problem.severity == "refuse" and "os.system" in problem.text


def test_onnx_is_held_to_the_ir_and_opset_of_the_pinned_onnxruntime() -> None:
    assert producer_problems(onnx(9, 17), {"onnxruntime": "1.17.3"}) == ()
    (problem,) = producer_problems(onnx(10, 19), {"onnxruntime": "1.16.3"})
    assert problem.severity == "refuse"
    assert problem.text == "needs IR version 10; the lock pins onnxruntime 1.16.3, which supports 9"
    opsets = producer_problems(onnx(9, 21), {"onnxruntime": "1.16.3"})
    assert [p.text.split(";")[0] for p in opsets] == ["needs ai.onnx opset 21"]
    (missing,) = producer_problems(onnx(9, 17), {"skl2onnx": "1.17.0"})
    assert missing.severity == "refuse" and "onnxruntime is not in the lock" in missing.text
    # The GPU build is the same runtime; a release newer than the table is checked as its last row.
    assert producer_problems(onnx(9, 17), {"onnxruntime-gpu": "1.17.1"}) == ()
    newest = max(ONNX_RUNTIME)
    (newer,) = producer_problems(onnx(9, 17), {"onnxruntime": f"{newest[0]}.{newest[1] + 5}.0"})
    assert newer.severity == "warn" and "newer than mlenv's table" in newer.text


def test_the_table_never_lowers_what_a_later_release_supports() -> None:
    rows = [ONNX_RUNTIME[key] for key in sorted(ONNX_RUNTIME)]
    assert all(all(a <= b for a, b in zip(x, y, strict=True)) for x, y in zip(rows, rows[1:], strict=False))


# ---------------------------------------------------------------------------- the lock records it


def with_model(facts: ModelFacts | None, accepted: tuple[tuple[str, str], ...] = ()) -> str:
    lock = full_lock()
    model = dataclasses.replace(lock.models[0], facts=facts, accept_producer=accepted)
    return dumps(dataclasses.replace(lock, models=(model,)))


def test_the_lock_records_format_producers_details_and_acceptance_deterministically() -> None:
    facts = ModelFacts(
        format="onnx",
        producers=(Producer(library="skl2onnx", version="1.17.0"), Producer(library="lightgbm")),
        details=(("opset:ai.onnx", "17"), ("ir_version", "9")),
        note="ONNX names its converter",
    )
    text = with_model(facts, (("scikit-learn", "1.5.2"),))
    assert 'format = "onnx"' in text
    assert 'producers = [{library = "lightgbm"}, {library = "skl2onnx", version = "1.17.0"}]' in text
    assert 'details = {ir_version = "9", "opset:ai.onnx" = "17"}' in text
    assert 'accept-producer = {scikit-learn = "1.5.2"}' in text
    lock = loads(text)
    (model,) = lock.models
    assert model.facts is not None and model.facts.details == (("ir_version", "9"), ("opset:ai.onnx", "17"))
    assert [p.library for p in model.facts.producers] == ["lightgbm", "skl2onnx"]
    assert model.accept_producer == (("scikit-learn", "1.5.2"),)
    assert dumps(lock) == text  # load -> dump is byte-identical


def test_an_old_lock_without_producers_reads_as_unread() -> None:
    (model,) = loads(with_model(None)).models
    assert model.facts is None


@pytest.mark.parametrize(
    ("facts", "key"),
    [
        (ModelFacts(format="joblib\nRUN x"), "models[0].format"),
        (ModelFacts(format="joblib", producers=(Producer(library="Scikit_Learn"),)), "models[0].producers"),
        (
            ModelFacts(format="joblib", producers=(Producer(library="a", version="1 2"),)),
            "models[0].producers[0].version",
        ),
        (ModelFacts(format="onnx", details=(("ir version", "9"),)), "models[0].details"),
        (ModelFacts(format="onnx", note="x" * 501), "models[0].note"),
    ],
)
def test_a_hand_edited_model_record_is_refused_naming_the_key(facts: ModelFacts, key: str) -> None:
    with pytest.raises(LockfileError) as caught:
        loads(with_model(facts))
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_the_grammar_also_holds_a_lock_built_in_code() -> None:
    lock = full_lock()
    bad = LockedModel(
        source="m.pkl", target="/m.pkl", strategy="bake", sha256="f" * 64, accept_producer=(("x y", "1"),)
    )
    problem = first_problem(dataclasses.replace(lock, models=(bad,)))
    assert problem is not None and problem[0] == "models[0].accept-producer"


def test_the_schema_knows_the_model_record() -> None:
    data = tomllib.loads(with_model(SKLEARN_152, (("scikit-learn", "1.5.2"),)))
    assert first_error(data, "mlenv.lock") is None
    data["models"][0]["producers"][0]["versoin"] = "1"
    assert first_error(data, "mlenv.lock") is not None
    del data["models"][0]["format"]
    data["models"][0]["producers"] = []
    problem = first_error(data, "mlenv.lock")
    assert problem is not None and problem[0].startswith("models[0]")


# ---------------------------------------------------------------------------- the spec key


SPEC = """
name = "m"
[target]
python = "3.11.9"
glibc = "2.36"
[[app.models]]
source = "model.joblib"
target = "/app/model.joblib"
"""


def test_accept_producer_is_read_normalised_and_a_spec_without_it_hashes_as_before(tmp_path: Path) -> None:
    (tmp_path / "mlenv.toml").write_text(SPEC)
    before = load_spec(tmp_path)
    assert before.app.models[0].accept_producer == ()
    unchanged = spec_hash(before)
    (tmp_path / "mlenv.toml").write_text(SPEC + 'accept-producer = { Scikit_Learn = "1.5.2" }\n')
    spec = load_spec(tmp_path)
    assert spec.app.models[0].accept_producer == (("scikit-learn", "1.5.2"),)
    assert spec_hash(spec) != unchanged
    # The digest of a spec without the key is what it was before the key existed.
    assert unchanged == "sha256:" + _legacy_hash(before)


LEGACY_PYTHON_FIELDS = ("requirements", "index_url", "extra_index_urls", "resolver", "venv")


def _legacy_hash(spec: Spec) -> str:
    data = dataclasses.asdict(spec)
    for volatile in ("path", "project_dir"):
        data.pop(volatile)
    # The python table as it was before the key existed (extras, groups, constraints, hashes came later).
    data["python"] = {key: data["python"][key] for key in LEGACY_PYTHON_FIELDS}
    for model in data["app"]["models"]:
        del model["accept_producer"]
    del data["app"]["allow"]
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('accept-producer = { "scikit learn" = "1.5.2" }', "app.models[0].accept-producer"),
        ('accept-producer = { scikit-learn = "1.5 2" }', "app.models[0].accept-producer"),
        ('accept-producer = { scikit-learn = "1.5.2", scikit_learn = "1.5.3" }', "accept-producer"),
        ('accept-producr = { scikit-learn = "1.5.2" }', "app.models[0]"),
    ],
)
def test_a_bad_accept_producer_is_one_line_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    (tmp_path / "mlenv.toml").write_text(SPEC + line + "\n")
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    assert key in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------- verify's comparison


SITE = "/opt/venv/lib/python3.11/site-packages"


def facts_with(model: ModelFacts | None, sklearn_installed: str, *, sha256: str = "a" * 64) -> EnvFacts:
    return EnvFacts(
        python_dists=(DistFact(name="scikit-learn", version=sklearn_installed, site=SITE),),
        artifacts=(ArtifactFact(path="/app/model.joblib", sha256=sha256, model=model),),
    )


def test_verify_reports_a_model_the_image_cannot_load_in_one_line_with_both_versions() -> None:
    expected = facts_with(sklearn("1.4.2"), "1.4.2")
    assert compare(expected, facts_with(sklearn("1.4.2"), "1.4.2"), subject="i").ok
    swapped = compare(expected, facts_with(sklearn("1.4.2"), "1.5.2"), subject="i")
    assert [drift_line(d) for d in swapped.drifts if d.layer == "models"] == [
        "models: /app/model.joblib: written by scikit-learn 1.4.2; the image has scikit-learn 1.5.2"
    ]
    replaced = compare(expected, facts_with(sklearn("1.5.2"), "1.4.2", sha256="b" * 64), subject="i")
    lines = [drift_line(d) for d in replaced.drifts]
    assert (
        "models: /app/model.joblib: written by scikit-learn 1.5.2; the image has scikit-learn 1.4.2" in lines
    )
    assert (
        "models: /app/model.joblib producers: version: expected scikit-learn 1.4.2, found scikit-learn 1.5.2"
        in lines
    )


def test_verify_holds_the_image_by_the_locks_acceptance() -> None:
    accepted = EnvFacts(
        python_dists=(DistFact(name="scikit-learn", version="1.4.2", site=SITE),),
        artifacts=(
            ArtifactFact(
                path="/app/model.joblib",
                sha256="a" * 64,
                model=sklearn("1.5.2"),
                accept_producer=(("scikit-learn", "1.5.2"),),
            ),
        ),
    )
    assert compare(accepted, facts_with(sklearn("1.5.2"), "1.4.2"), subject="i").ok


def test_a_model_too_large_to_keep_is_judged_by_the_locks_reading_of_the_same_bytes() -> None:
    expected = facts_with(sklearn("1.4.2"), "1.4.2")
    report = compare(expected, facts_with(None, "1.5.2"), subject="i")
    assert [d.kind for d in report.drifts if d.layer == "models"] == ["producer"]


def test_a_lock_without_producers_is_not_stale(tmp_path: Path) -> None:
    # Locks written before producers were recorded still build: verify holds the image's model against
    # the library installed there either way, and the next `mlenv lock` records and checks them.
    (tmp_path / "mlenv.toml").write_text(SPEC)
    (tmp_path / "model.joblib").write_bytes(b"m")
    spec = load_spec(tmp_path)
    old = LockedModel(
        source="model.joblib",
        target="/app/model.joblib",
        strategy="bake",
        sha256=hashlib.sha256(b"m").hexdigest(),
    )
    lock = dataclasses.replace(full_lock(), models=(old,))
    assert not [r for r in stale_reasons(spec, lock) if "model" in r]


def test_a_format_mlenv_cannot_read_is_one_warning() -> None:
    facts = ModelFacts(format="unknown", note="not a format mlenv reads")
    (problem,) = producer_problems(facts, {})
    assert problem.severity == "warn" and "not a format mlenv reads" in problem.text


def test_verify_reports_an_unsafe_pickle_put_into_the_image() -> None:
    expected = facts_with(sklearn("1.4.2"), "1.4.2")
    evil = ModelFacts(format="pickle", imports=("posix.system",), unsafe=("posix.system",))
    report = compare(expected, facts_with(evil, "1.4.2", sha256="c" * 64), subject="i")
    lines = [drift_line(d) for d in report.drifts]
    assert (
        "models: /app/model.joblib: an unsafe pickle: it imports posix.system, which can run code on load"
        in lines
    )
    assert any(line.startswith("models: /app/model.joblib: modified") for line in lines)


def test_the_same_bytes_read_by_a_newer_reader_are_no_drift_against_the_locks_record() -> None:
    expected = facts_with(sklearn("1.4.2"), "1.4.2")
    more = dataclasses.replace(
        sklearn("1.4.2"), producers=(*sklearn("1.4.2").producers, Producer(library="numpy"))
    )
    report = compare(expected, facts_with(more, "1.4.2"), subject="i")
    assert [drift_line(d) for d in report.drifts if d.layer == "models"] == [
        "models: /app/model.joblib: written by numpy; the image has no numpy"
    ]
