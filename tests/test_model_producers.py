"""Models written by real libraries, held by `mlenv lock` against the versions the lock pins, and read
again by `mlenv verify` inside the image.

The model files are made by scikit-learn 1.4.2 and 1.5.2 (and onnx) in throwaway cached venvs
(tools/localbase/models.py); this process never imports those libraries and never loads a model:
pickle's and joblib's loaders are poisoned for every in-process test, and each asserts they were never
called. The lock tests in-process pin the Python packages directly (the rule needs only the pins); the
end-to-end ones run `mlenv lock` on the fraud example against real PyPI and the test base image, and
`mlenv verify` on the session's fraud image and images derived from it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import pickle
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit

from mlenv.errors import SpecError
from mlenv.lockfile import dumps, loads
from mlenv.model.lock import LockedModel, LockedPython, PythonPin
from mlenv.resolve.models import lock_models
from mlenv.spec import load_spec
from tests.helpers import Built, derive_image, lock_tag, run_cli
from tests.lockdata import full_lock
from tests.unpickling import poison_loaders
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage
from tools.localbase.models import onnx_model, sklearn_model
from tools.localbase.project import copy_example

INDEX = "https://pypi.org/simple"
FRAUD_PINS = {"scikit-learn": "1.4.2", "lightgbm": "4.3.0", "numpy": "1.26.4", "joblib": "1.4.2"}


@pytest.fixture(autouse=True)
def never_unpickled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """pickle's and joblib's loaders replaced by traps; the test fails if mlenv called one."""
    calls = poison_loaders(monkeypatch)
    yield calls
    assert calls == []


def pins(**versions: str) -> LockedPython:
    return LockedPython(
        resolver="uv",
        requires_python=">=3.11",
        venv="/opt/venv",
        index_url=INDEX,
        packages=tuple(
            PythonPin(name=name, version=version, index=INDEX, requested=True)
            for name, version in sorted(versions.items())
        ),
    )


def project(tmp_path: Path, model: Path, accept: str | None = None) -> Path:
    """A spec whose one model is `model` (copied into the project)."""
    directory = tmp_path / "project"
    (directory / "models").mkdir(parents=True)
    shutil.copy(model, directory / "models" / model.name)
    lines = [
        'name = "m"',
        "[target]",
        'python = "3.11.9"',
        'glibc = "2.36"',
        "[[app.models]]",
        f'source = "models/{model.name}"',
        f'target = "/app/models/{model.name}"',
    ]
    if accept is not None:
        lines.append(f"accept-producer = {accept}")
    (directory / "mlenv.toml").write_text("\n".join(lines) + "\n")
    return directory


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_with(directory: Path, python: LockedPython) -> tuple[tuple[LockedModel, ...], list[str]]:
    warnings: list[str] = []
    return lock_models(load_spec(directory), python, warn=warnings.append), warnings


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    return {
        "1.4.2": sklearn_model(out, version="1.4.2"),
        "1.5.2": sklearn_model(out, version="1.5.2"),
        "1.5.2+xz": sklearn_model(out, version="1.5.2", compress="xz"),
        "onnx": onnx_model(out),
    }


# ---------------------------------------------------------------------------- lock, in-process


@pytest.mark.network
def test_the_matching_lock_passes_and_records_the_producer(tmp_path: Path, models: dict[str, Path]) -> None:
    locked, warnings = lock_with(project(tmp_path, models["1.4.2"]), pins(**FRAUD_PINS))
    (model,) = locked
    assert model.facts is not None and model.facts.format == "joblib"
    assert {(p.library, p.version) for p in model.facts.producers} == {
        ("lightgbm", None),
        ("scikit-learn", "1.4.2"),
    }
    # A pickle records no LightGBM version: said once, not refused (lightgbm is in the lock).
    assert len(warnings) == 1 and "no lightgbm version" in warnings[0]
    lock = dataclasses.replace(full_lock(), models=locked)
    assert dumps(loads(dumps(lock))) == dumps(lock)
    assert 'producers = [{library = "lightgbm"}, {library = "scikit-learn", version = "1.4.2"}]' in dumps(
        lock
    )


@pytest.mark.network
@pytest.mark.parametrize("name", ["1.5.2", "1.5.2+xz"])
def test_a_model_of_scikit_learn_1_5_2_in_a_lock_at_1_4_2_is_refused_naming_both(
    tmp_path: Path, models: dict[str, Path], name: str
) -> None:
    with pytest.raises(SpecError) as caught:
        lock_with(project(tmp_path, models[name]), pins(**FRAUD_PINS))
    message = str(caught.value)
    assert "app.models[0]" in message and models[name].name in message
    assert "written by scikit-learn 1.5.2; the lock pins scikit-learn 1.4.2" in message
    assert "\n" not in message


@pytest.mark.network
def test_accept_producer_lets_that_one_mismatch_through_and_the_lock_records_it(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    directory = project(tmp_path, models["1.5.2"], accept='{ scikit-learn = "1.5.2" }')
    (model,), _ = lock_with(directory, pins(**FRAUD_PINS))
    assert model.accept_producer == (("scikit-learn", "1.5.2"),)
    assert 'accept-producer = {scikit-learn = "1.5.2"}' in dumps(
        dataclasses.replace(full_lock(), models=(model,))
    )
    # Accepting 1.5.2 is not accepting 1.5.2's successor.
    other = project(tmp_path / "other", models["1.5.2"], accept='{ scikit-learn = "1.5.1" }')
    with pytest.raises(SpecError, match="written by scikit-learn 1.5.2"):
        lock_with(other, pins(**FRAUD_PINS))


@pytest.mark.network
def test_a_patch_difference_is_one_warning(tmp_path: Path, models: dict[str, Path]) -> None:
    _, warnings = lock_with(
        project(tmp_path, models["1.4.2"]), pins(**{**FRAUD_PINS, "scikit-learn": "1.4.1"})
    )
    assert [w for w in warnings if "scikit-learn" in w] == [
        f"{tmp_path / 'project' / 'mlenv.toml'}: app.models[0]: models/{models['1.4.2'].name}: written by "
        "scikit-learn 1.4.2; the lock pins scikit-learn 1.4.1, a patch release apart"
    ]


@pytest.mark.network
def test_a_producer_not_in_the_lock_is_refused(tmp_path: Path, models: dict[str, Path]) -> None:
    without = {k: v for k, v in FRAUD_PINS.items() if k != "scikit-learn"}
    with pytest.raises(SpecError, match="written by scikit-learn 1.4.2; scikit-learn is not in the lock"):
        lock_with(project(tmp_path, models["1.4.2"]), pins(**without))


@pytest.mark.network
def test_onnx_is_held_to_the_pinned_onnxruntime(tmp_path: Path, models: dict[str, Path]) -> None:
    directory = project(tmp_path, models["onnx"])  # ir_version 8, ai.onnx opset 17
    (model,), _ = lock_with(directory, pins(onnxruntime="1.17.3"))
    assert model.facts is not None and ("ir_version", "8") in model.facts.details
    with pytest.raises(SpecError, match="needs ai.onnx opset 17; the lock pins onnxruntime 1.11.1"):
        lock_with(directory, pins(onnxruntime="1.11.1"))
    with pytest.raises(SpecError, match="onnxruntime is not in the lock"):
        lock_with(directory, pins(numpy="1.26.4"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server of a directory: (its base URL, the directory)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", root
    finally:
        server.shutdown()
        server.server_close()


def remote_project(tmp_path: Path, url: str, sha256: str) -> Path:
    directory = tmp_path / "remote"
    directory.mkdir(parents=True)
    (directory / "mlenv.toml").write_text(
        "\n".join(
            [
                'name = "m"',
                "[target]",
                'python = "3.11.9"',
                'glibc = "2.36"',
                "[[app.models]]",
                f'source = "{url}"',
                'target = "/models/model.joblib"',
                'strategy = "download"',
                f'sha256 = "{sha256}"',
            ]
        )
        + "\n"
    )
    return directory


@pytest.mark.network
def test_a_remote_model_is_fetched_into_the_cache_and_held_to_the_same_rule(
    tmp_path: Path, models: dict[str, Path], served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLENV_CACHE", str(tmp_path / "cache"))
    url, root = served
    for name in ("1.4.2", "1.5.2"):
        shutil.copy(models[name], root / f"{name}.joblib")
    good = sha256_of(models["1.4.2"])
    (model,), _ = lock_with(remote_project(tmp_path / "a", f"{url}/1.4.2.joblib", good), pins(**FRAUD_PINS))
    assert model.facts is not None and ("scikit-learn", "1.4.2") in {
        (p.library, p.version) for p in model.facts.producers
    }
    assert model.size == models["1.4.2"].stat().st_size
    newer = remote_project(tmp_path / "b", f"{url}/1.5.2.joblib", sha256_of(models["1.5.2"]))
    with pytest.raises(SpecError, match="written by scikit-learn 1.5.2; the lock pins scikit-learn 1.4.2"):
        lock_with(newer, pins(**FRAUD_PINS))
    wrong = remote_project(tmp_path / "c", f"{url}/1.5.2.joblib", "0" * 64)
    with pytest.raises(SpecError, match=r"app\.models\[0\]\.sha256"):
        lock_with(wrong, pins(**FRAUD_PINS))


def test_a_remote_model_that_cannot_be_fetched_is_locked_unread_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLENV_CACHE", str(tmp_path / "cache"))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = remote_project(tmp_path, f"http://127.0.0.1:{port}/model.joblib", "a" * 64)
    (model,), warnings = lock_with(directory, pins(**FRAUD_PINS))
    assert model.facts is None
    (warning,) = warnings
    assert "app.models[0]" in warning and "not checked" in warning


class Canary:
    """Pickled, its reduce would create the canary file (never, since nothing here unpickles it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.path}",)


def test_an_unsafe_pickle_is_refused_naming_its_globals_and_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Canary(canary), protocol=4))
    with pytest.raises(SpecError) as caught:
        lock_with(project(tmp_path, evil), pins(**FRAUD_PINS))
    message = str(caught.value)
    assert "models/evil.pkl" in message and "unsafe pickle" in message and "posix.system" in message
    assert not canary.exists()


# ---------------------------------------------------------------------------- mlenv lock, end to end


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_mlenv_lock_of_the_fraud_example_refuses_a_1_5_2_model_then_accepts_it(
    base_image_python: BaseImage, tmp_path: Path, models: dict[str, Path]
) -> None:
    directory = copy_example("fraud-detector", tmp_path, base={"image": base_image_python.ref})
    (directory / "models").mkdir()
    shutil.copy(models["1.5.2"], directory / "models" / "model.joblib")
    refused = run_cli("lock", str(directory))
    assert refused.code == 2, refused.stderr
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("mlenv: error")]
    assert "app.models[0]" in line and "models/model.joblib" in line
    assert "written by scikit-learn 1.5.2; the lock pins scikit-learn 1.4.2" in line
    assert not (directory / "mlenv.lock").exists()
    spec = tomlkit.parse((directory / "mlenv.toml").read_text())
    spec["app"]["models"][0]["accept-producer"] = {"scikit-learn": "1.5.2"}
    (directory / "mlenv.toml").write_text(tomlkit.dumps(spec))
    accepted = run_cli("lock", str(directory))
    assert accepted.code == 0, accepted.stderr
    (model,) = loads((directory / "mlenv.lock").read_bytes()).models
    assert model.accept_producer == (("scikit-learn", "1.5.2"),)
    assert model.facts is not None and ("scikit-learn", "1.5.2") in {
        (p.library, p.version) for p in model.facts.producers
    }


# ---------------------------------------------------------------------------- verify reads the image's copy


def verify(image: str, lock: Path) -> tuple[int, list[str]]:
    result = run_cli("verify", image, "--lock", str(lock))
    assert result.code in (0, 1), result.stderr
    return result.code, result.stdout.splitlines()


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_the_fraud_image_verifies_and_its_lock_records_the_producer(fraud_image: Built) -> None:
    (model,) = loads(fraud_image.lock.read_bytes()).models
    assert model.facts is not None
    assert ("scikit-learn", "1.4.2") in {(p.library, p.version) for p in model.facts.producers}
    code, lines = verify(fraud_image.tag, fraud_image.lock)
    assert code == 0, lines


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_a_model_replaced_by_one_of_1_5_2_is_a_models_drift_naming_both_versions(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path, models: dict[str, Path]
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(models["1.5.2"], context / "model.joblib")
    tag = derive_image(
        docker_daemon,
        context,
        fraud_image.tag,
        lock_tag("fraud", fraud_image.lock, "model-1.5.2"),
        ["COPY model.joblib /app/models/model.joblib"],
    )
    code, lines = verify(tag, fraud_image.lock)
    assert code == 1
    models_lines = [x for x in lines if "models: /app/models/model.joblib" in x]
    assert any(
        "written by scikit-learn 1.5.2; the image has scikit-learn 1.4.2" in x for x in models_lines
    ), lines
    assert any("producers: version: expected lightgbm, scikit-learn 1.4.2" in x for x in models_lines), lines


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_an_image_whose_scikit_learn_claims_another_release_cannot_load_the_model(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    site = "/opt/venv/lib/python3.11/site-packages"
    tag = derive_image(
        docker_daemon,
        context,
        fraud_image.tag,
        lock_tag("fraud", fraud_image.lock, "sklearn-1.5.2"),
        [
            f"RUN mv {site}/scikit_learn-1.4.2.dist-info {site}/scikit_learn-1.5.2.dist-info"
            f" && sed -i 's/^Version: 1.4.2$/Version: 1.5.2/' {site}/scikit_learn-1.5.2.dist-info/METADATA"
        ],
    )
    code, lines = verify(tag, fraud_image.lock)
    assert code == 1
    assert any(
        "models: /app/models/model.joblib: written by scikit-learn 1.4.2; the image has scikit-learn 1.5.2"
        in x
        for x in lines
    ), lines
