"""`mlenv diff A B`: the layer rules on sides built by hand (pure), the CLI on written locks and bad input,
then real locks: two fraud-detector locks (other pandas and scikit-learn, another base digest), a lock
against its built image and a drifted one, and torch 2.3.1 against 2.5.1 (cuDNN 8 -> 9, the driver floor)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from mlenv.cli.diff import driver_floor
from mlenv.lockfile import read_lock, write_lock
from mlenv.model.facts import AptFact, CudaComponent, DistFact, EnvFacts, InterpreterFact
from mlenv.model.lock import PythonFile, PythonPin
from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.resolve.cuda import version_key
from mlenv.verify.envdiff import (
    BaseSide,
    Change,
    ModelSide,
    Side,
    diff,
    diff_markdown,
    diff_text,
    image_side,
    version_step,
)
from tests.helpers import Built, derive_image, lock_tag, run_cli, session_tag
from tests.infra import required
from tests.lockdata import full_lock
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image, repository
from tools.localbase.project import copy_example, train_fraud_model
from tools.localbase.registry import Registry

# ---------------------------------------------------------------------------- the rules, pure


@pytest.mark.parametrize(
    ("old", "new", "kind", "step"),
    [
        ("1.4.2", "1.5.2", "upgraded", "minor"),
        ("2.0.3", "1.5.3", "downgraded", "major"),
        ("2.0.3", "2.0.1", "downgraded", "patch"),
        ("8.9.2.26", "9.1.0.70", "upgraded", "major"),
        ("12.1.105", "12.1.106", "upgraded", "patch"),  # a fourth component is still a patch step
        ("1.0", "1.0.1", "upgraded", "patch"),  # a missing component counts as 0
        ("2.3.1+cu121", "2.3.1+cpu", "changed", "build"),
        ("1.5.0rc1", "1.5.0", "upgraded", "pre-release"),
        ("1.0", "1.0.0", "changed", None),  # the same version written two ways
        ("not a version", "1.0", "changed", None),
    ],
)
def test_version_steps(old: str, new: str, kind: str, step: str | None) -> None:
    assert version_step(old, new) == (kind, step)


def side(kind: str = "lock", **changes: object) -> Side:
    base = BaseSide(
        digest="sha256:" + "1" * 64,
        layers=("sha256:" + "a" * 64,),
        os_id="debian",
        os_version="12",
        architecture="amd64",
        glibc="2.36",
    )
    values: dict[str, object] = {
        "subject": f"some.{kind}",
        "kind": kind,
        "base": base,
        "apt": (AptFact(name="libc6", version="2.36-9+deb12u4", architecture="amd64"),),
        "apt_complete": True,
        "interpreter": InterpreterFact(path="/opt/venv/bin/python3.11", version="3.11.2"),
        "site": "/opt/venv/lib/python3.11/site-packages",
        "python": (("numpy", "1.26.4"), ("pandas", "2.0.3")),
        "cuda": (),
        "driver_floor": None,
        "models": (ModelSide(path="/app/model.joblib", sha256="f" * 64, strategy="bake"),),
    }
    values.update(changes)
    return Side(**values)  # type: ignore[arg-type]


def changes_of(a: Side, b: Side, layer: str) -> list[Change]:
    return [c for found in diff(a, b).layers if found.layer == layer for c in found.changes]


def test_the_same_side_is_equal_and_each_layer_says_what_it_covered() -> None:
    result = diff(side(), side())
    assert result.equal
    text = diff_text(result)
    assert "apt: same (1 package)" in text and "python: same (2 packages)" in text
    assert "python-interpreter: same (3.11.2 at /opt/venv/bin/python3.11)" in text
    assert text.endswith("A and B are the same in every layer both state\n")


def test_packages_added_removed_and_stepped() -> None:
    b = side(python=(("pandas", "2.2.2"), ("scipy", "1.13.1")))
    assert changes_of(side(), b, "python") == [
        Change(kind="removed", subject="numpy", a="1.26.4", b=None),
        Change(kind="upgraded", subject="pandas", a="2.0.3", b="2.2.2", step="minor"),
        Change(kind="added", subject="scipy", a=None, b="1.13.1"),
    ]
    lines = diff_text(diff(side(), b)).splitlines()
    assert "python: 3 changes" in lines
    assert "  pandas: upgraded 2.0.3 -> 2.2.2 (minor)" in lines
    assert "  numpy: removed (A has 1.26.4)" in lines and "  scipy: added 1.13.1" in lines


def test_apt_versions_are_ordered_as_dpkg_orders_them() -> None:
    b = side(apt=(AptFact(name="libc6", version="2.36-9+deb12u10", architecture="amd64"),))
    # As text "u10" < "u4"; dpkg's order says u10 is the newer.
    assert changes_of(side(), b, "apt") == [
        Change(kind="upgraded", subject="libc6:amd64", a="2.36-9+deb12u4", b="2.36-9+deb12u10")
    ]


def test_a_lock_without_a_base_compares_only_the_packages_it_pins() -> None:
    curl = AptFact(name="curl", version="7.88.1-10+deb12u6", architecture="amd64")
    lock = side(base=None, apt=(curl,), apt_complete=False)
    image = side("image", apt=(curl, AptFact(name="libc6", version="2.36", architecture="amd64")))
    result = diff(lock, image)
    apt = next(layer for layer in result.layers if layer.layer == "apt")
    assert (
        apt.compared
        and apt.changes == ()
        and apt.note == "1 package that a lock without a base pins, compared alone"
    )
    base = next(layer for layer in result.layers if layer.layer == "base")
    assert not base.compared and base.note == "A (lock) states no base image"
    older = side("image", apt=(dataclasses.replace(curl, version="7.88.1-10"),))
    assert [c.kind for c in changes_of(lock, older, "apt")] == ["downgraded"]


def test_a_lock_s_base_layers_must_be_the_image_s_first_layers() -> None:
    lock = side()
    assert lock.base is not None
    above = dataclasses.replace(
        lock.base, layers=(*lock.base.layers, "sha256:" + "b" * 64), layers_continue=True
    )
    assert changes_of(lock, side("image", base=above), "base") == []
    other = dataclasses.replace(above, layers=("sha256:" + "c" * 64, *above.layers[1:]))
    assert changes_of(lock, side("image", base=other), "base") == [
        Change(kind="changed", subject="layer 1 of 1", a=lock.base.layers[0], b="sha256:" + "c" * 64)
    ]
    # Two images: their lists run on above the base, so only the base-digest label compares the base.
    assert changes_of(side("image", base=above), side("image", base=other), "base") == []
    unlabelled = diff(side("image", base=dataclasses.replace(above, digest=None)), side("image", base=other))
    base = next(layer for layer in unlabelled.layers if layer.layer == "base")
    assert base.note == "digest not compared: A has no org.opencontainers.image.base.digest label"


def test_an_image_s_base_label_is_read_from_its_facts_and_a_credential_in_it_masked() -> None:
    secret = "https://user:hunter2@registry.example.org/base@sha256:" + "1" * 64
    facts = EnvFacts(
        layer_diff_ids=("sha256:" + "a" * 64,),
        labels=(("org.opencontainers.image.base.digest", secret),),
        python_dists=(
            DistFact(name="pip", version="23.0.1", site="/usr/lib/python3/dist-packages"),
            DistFact(name="numpy", version="1.26.4", site="/opt/venv/lib/python3.11/site-packages"),
            DistFact(name="pandas", version="2.0.3", site="/opt/venv/lib/python3.11/site-packages"),
        ),
        interpreters=(InterpreterFact(path="/opt/venv/bin/python3.11", version="3.11.2"),),
    )
    image = image_side(facts, subject="img", driver_floor=None)
    assert image.base is not None and image.base.digest == "<masked: a user:password@ URL>"
    # The app's site: the one holding the most distributions, with its own interpreter.
    assert image.site == "/opt/venv/lib/python3.11/site-packages"
    assert image.python == (("numpy", "1.26.4"), ("pandas", "2.0.3"))
    assert image.interpreter == InterpreterFact(path="/opt/venv/bin/python3.11", version="3.11.2")
    assert "hunter2" not in diff_text(diff(side(), image))
    # Beside a lock, the lock's venv is the site compared, however few it holds.
    system = image_side(facts, subject="img", driver_floor=None, site="/usr/lib/python3/dist-packages")
    assert system.python == (("pip", "23.0.1"),)


def test_cuda_consequences_cudnn_major_and_driver_floor() -> None:
    a = side(
        cuda=(
            CudaComponent(name="cudnn", version="8.9.2.26", source="wheel:nvidia-cudnn-cu12"),
            CudaComponent(name="runtime", version="12.1.105", source="wheel:nvidia-cuda-runtime-cu12"),
        ),
        driver_floor="530.30.02",
    )
    b = side(
        cuda=(
            CudaComponent(name="cudnn", version="9.1.0.70", source="wheel:nvidia-cudnn-cu12"),
            CudaComponent(name="runtime", version="12.4.127", source="wheel:nvidia-cuda-runtime-cu12"),
        ),
        driver_floor="550.54.14",
    )
    found = {c.subject: c for c in changes_of(a, b, "cuda")}
    assert (found["cudnn"].kind, found["cudnn"].step) == ("upgraded", "major")
    assert (found["CUDA release"].a, found["CUDA release"].b, found["CUDA release"].step) == (
        "12.1",
        "12.4",
        "minor",
    )
    assert (found["cuDNN major"].a, found["cuDNN major"].b) == ("8", "9")
    floor = found["driver floor"]
    assert (floor.kind, floor.a, floor.b) == ("raised", "530.30.02", "550.54.14")
    assert floor.detail is not None and "B needs an NVIDIA driver >= 550.54.14" in floor.detail
    back = {c.subject: c for c in changes_of(b, a, "cuda")}
    assert back["driver floor"].kind == "lowered" and back["cuDNN major"].kind == "downgraded"


def test_driver_floor_from_the_driver_table() -> None:
    def component(name: str, version: str) -> CudaComponent:
        return CudaComponent(name=name, version=version, source="test")

    assert driver_floor([component("runtime", "12.1.105")]) == "530.30.02"  # the runtime is CUDA 12.1
    assert driver_floor([component("cuda", "12.4.1")]) == "550.54.15"  # an update with a floor of its own
    # The highest of the toolkit's and the runtime's, compared as versions (not as text).
    assert driver_floor([component("cuda", "12.1.1"), component("runtime", "12.4.127")]) == "550.54.14"
    # A release the table lacks: its major's minor-version-compatibility floor.
    assert driver_floor([component("runtime", "12.7.0")]) == "525.60.13"
    assert driver_floor([component("cudnn", "9.1.0.70")]) is None and driver_floor([]) is None


def test_models_by_hash_and_producer_where_both_state_them() -> None:
    sklearn = (Producer(library="scikit-learn", version="1.4.2"),)
    a = side(models=(ModelSide(path="/app/m", sha256="1" * 64, strategy="bake", producers=sklearn),))
    newer = (Producer(library="scikit-learn", version="1.5.2"),)
    b = side(models=(ModelSide(path="/app/m", sha256="2" * 64, strategy="bake", producers=newer),))
    assert changes_of(a, b, "models") == [
        Change(kind="changed", subject="/app/m", a="1" * 64, b="2" * 64),
        Change(kind="upgraded", subject="/app/m written by scikit-learn", a="1.4.2", b="1.5.2", step="minor"),
    ]
    # One side without producers (an old lock): the hash alone is compared.
    unknown = side(models=(ModelSide(path="/app/m", sha256="2" * 64, strategy="bake"),))
    assert [c.subject for c in changes_of(a, unknown, "models")] == ["/app/m"]
    # An image holds only baked models; two images state none.
    mounted = ModelSide(path="/models/big", sha256="3" * 64, strategy="mount")
    lock = side(models=(*a.models, mounted))  # type: ignore[misc]
    image = side("image", models=(ModelSide(path="/app/m", sha256="1" * 64),))
    assert changes_of(lock, image, "models") == []
    two = diff(side("image", models=None), side("image", models=None))
    models = next(layer for layer in two.layers if layer.layer == "models")
    assert not models.compared and models.note is not None and "paths a lock names" in models.note


def test_markdown_is_a_table_per_changed_layer_with_cells_escaped() -> None:
    b = side(python=(("numpy", "1.26.4"), ("pandas", "2.2.2")), subject="a|b.lock")
    text = diff_markdown(diff(side(), b))
    assert "| pandas | upgraded | `2.0.3` | `2.2.2` | minor |  |" in text.splitlines()
    assert "`a\\|b.lock`" in text
    assert "#### python" in text and "#### apt" not in text
    assert "Same: base (debian 12, sha256:" in text


# ---------------------------------------------------------------------------- the command, no network


def written(tmp_path: Path, name: str, **changes: object) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_lock(dataclasses.replace(full_lock(), **changes), path)  # type: ignore[arg-type]
    return path


def test_cli_lock_against_itself_and_its_project_directory(tmp_path: Path) -> None:
    lock = written(tmp_path, "p/mlenv.lock")
    same = run_cli("diff", str(lock), str(lock.parent))
    assert same.code == 0, same.stderr
    assert same.stdout.splitlines()[-1] == "A and B are the same in every layer both state"


def test_cli_formats_of_a_lock_with_another_pin(tmp_path: Path) -> None:
    lock = full_lock()
    pins = tuple(
        dataclasses.replace(p, version="2.1.0") if p.name == "pandas" else p for p in lock.python.packages
    )
    a = written(tmp_path, "a.lock")
    b = written(tmp_path, "b.lock", python=dataclasses.replace(lock.python, packages=pins))
    text = run_cli("diff", str(a), str(b))
    assert text.code == 1, text.stderr
    assert "  pandas: upgraded 2.0.3 -> 2.1.0 (minor)" in text.stdout.splitlines()
    data = json.loads(run_cli("diff", str(a), str(b), "--format", "json").stdout)
    assert data["equal"] is False and data["a"] == {"subject": str(a), "kind": "lock"}
    assert data["platform"] == "linux/amd64"  # the lock's first platform, as the lock file lists them
    python = next(layer for layer in data["layers"] if layer["layer"] == "python")
    assert python["changes"] == [
        {"kind": "upgraded", "subject": "pandas", "a": "2.0.3", "b": "2.1.0", "step": "minor", "detail": None}
    ]
    assert [layer["layer"] for layer in data["layers"]] == [
        "base",
        "apt",
        "python-interpreter",
        "python",
        "cuda",
        "models",
    ]
    markdown = run_cli("diff", str(a), str(b), "-f", "markdown")
    assert markdown.code == 1
    assert "| pandas | upgraded | `2.0.3` | `2.1.0` | minor |  |" in markdown.stdout.splitlines()


def test_cli_models_and_cuda_of_two_written_locks(tmp_path: Path) -> None:
    lock = full_lock()
    wrote = ModelFacts(format="joblib", producers=(Producer(library="scikit-learn", version="1.4.2"),))
    newer = ModelFacts(format="joblib+zlib", producers=(Producer(library="scikit-learn", version="1.5.2"),))
    model = dataclasses.replace(lock.models[0], sha256="e" * 64, facts=newer)
    cuda = dataclasses.replace(
        lock.cuda,
        components=(
            CudaComponent(name="cudnn", version="9.1.0.70", source="wheel:nvidia-cudnn-cu12"),
            CudaComponent(name="runtime", version="12.4.127", source="wheel:nvidia-cuda-runtime-cu12"),
        ),
    )
    a = written(tmp_path, "a.lock", models=(dataclasses.replace(lock.models[0], facts=wrote),))
    b = written(tmp_path, "b.lock", models=(model,), cuda=cuda)
    result = run_cli("diff", str(a), str(b))
    assert result.code == 1, result.stderr
    lines = result.stdout.splitlines()
    assert f"  /app/models/model.joblib: changed {'f' * 64} -> {'e' * 64}" in lines
    assert "  /app/models/model.joblib format: changed joblib -> joblib+zlib" in lines
    assert "  /app/models/model.joblib written by scikit-learn: upgraded 1.4.2 -> 1.5.2 (minor)" in lines
    # The floor comes from resolve's driver table, the same way on both sides.
    assert any(
        line.startswith(
            "  driver floor: raised 530.30.02 -> 550.54.14; B needs an NVIDIA driver >= 550.54.14"
        )
        for line in lines
    ), result.stdout


def test_cli_a_model_the_same_on_both_sides_that_b_s_pins_cannot_load(tmp_path: Path) -> None:
    """The seed's story: the model is unchanged, but B moved the library that wrote it a minor release."""
    lock = full_lock()
    wrote = ModelFacts(format="joblib", producers=(Producer(library="scikit-learn", version="1.4.2"),))
    model = dataclasses.replace(lock.models[0], facts=wrote)
    pandas = next(p for p in lock.python.packages if p.name == "pandas")

    def pinned(version: str) -> object:
        sdist = PythonFile(
            name=f"scikit_learn-{version}.tar.gz",
            url=f"https://files.example.org/scikit_learn-{version}.tar.gz",
            size=None,
            sha256="a" * 64,
        )
        sklearn = PythonPin(
            name="scikit-learn", version=version, index=pandas.index, requested=True, sdist=sdist
        )
        return dataclasses.replace(lock.python, packages=(*lock.python.packages, sklearn))

    a = written(tmp_path, "a.lock", models=(model,), python=pinned("1.4.2"))
    b = written(tmp_path, "b.lock", models=(model,), python=pinned("1.5.0"))
    result = run_cli("diff", str(a), str(b))
    assert result.code == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "  scikit-learn: upgraded 1.4.2 -> 1.5.0 (minor)" in lines
    assert (
        "  /app/models/model.joblib load refusal: added "
        "written by scikit-learn 1.4.2; the lock pins scikit-learn 1.5.0"
    ) in lines, result.stdout
    back = run_cli("diff", str(b), str(a)).stdout.splitlines()
    assert (
        "  /app/models/model.joblib load refusal: removed "
        "(A has written by scikit-learn 1.4.2; the lock pins scikit-learn 1.5.0)"
    ) in back


def one_error_line(result_stderr: str) -> str:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlenv: error: "), result_stderr
    assert "Traceback" not in result_stderr
    return lines[0]


def test_cli_bad_inputs_are_one_line_exit_2(tmp_path: Path) -> None:
    lock = written(tmp_path, "mlenv.lock")
    (tmp_path / "empty").mkdir()
    garbage = tmp_path / "garbage.lock"
    garbage.write_bytes(b"\xff\xfe not toml [[[")
    cases = {
        (str(lock), str(tmp_path / "missing.lock")): "B " + str(tmp_path / "missing.lock") + ": no such file",
        (str(tmp_path / "empty"), str(lock)): "a directory without mlenv.lock",
        (str(lock), str(garbage)): str(garbage),
        (str(lock), "ftp://example.org/x"): "unknown transport 'ftp://'",
        (str(lock), f"oci:{tmp_path / 'no-layout'}"): str(tmp_path / "no-layout"),
        (str(lock), "docker-archive:"): "nothing after 'docker-archive:'",
        # A transport's path that does not exist is the image reader's to name, not a missing lock.
        (str(lock), f"docker-archive:{tmp_path / 'absent.tar'}"): f"docker-archive:{tmp_path / 'absent.tar'}",
    }
    for (a, b), needle in cases.items():
        result = run_cli("diff", a, b)
        assert result.code == 2, (a, b, result.stdout, result.stderr)
        assert needle in one_error_line(result.stderr), (a, b, result.stderr)
        assert result.stdout == ""
    wrong = run_cli("diff", str(lock), str(lock), "--format", "html")
    assert wrong.code == 2 and "--format: unknown format 'html'" in one_error_line(wrong.stderr)
    alone = run_cli("diff", str(lock))
    assert alone.code == 2 and "Missing argument 'b'" in one_error_line(alone.stderr)


# ---------------------------------------------------------------------------- real locks and images


@pytest.fixture(scope="module")
def relabelled_base(
    docker_daemon: Daemon,
    registry: Registry,
    base_image_python: BaseImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The python base with one label more: the same layers and OS under another manifest digest, pushed
    to the session's registry as a second base image."""
    name = f"{repository('python')}-relabelled"
    local = session_tag("bookworm-python-relabelled", base_image_python.ref, "1")
    context = tmp_path_factory.mktemp("relabelled")
    derive_image(docker_daemon, context, base_image_python.local, local, ["LABEL dev.mlenv.test=relabelled"])
    push_image(docker_daemon.client, local, registry.host, name, "1")
    return f"{registry.host}/{name}:1"


def locked(project: Path) -> Path:
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr[-2000:]
    return project / "mlenv.lock"


@pytest.fixture(scope="module")
def fraud_locks(
    base_image_python: BaseImage, relabelled_base: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The fraud detector locked as shipped, and again with other pandas and scikit-learn pins on the
    relabelled base (the same model file: its producer, scikit-learn 1.4.2, is a patch from 1.4.0)."""
    root = tmp_path_factory.mktemp("fraud-diff")
    first = copy_example("fraud-detector", root / "a", base={"image": base_image_python.ref})
    with required():
        train_fraud_model(first)
    second = copy_example("fraud-detector", root / "b", base={"image": relabelled_base})
    (second / "models").mkdir(exist_ok=True)
    shutil.copy(first / "models" / "model.joblib", second / "models" / "model.joblib")
    requirements = second / "requirements.txt"
    text = requirements.read_text()
    assert "scikit-learn==1.4.2" in text and "pandas==2.0.3" in text
    requirements.write_text(
        text.replace("scikit-learn==1.4.2", "scikit-learn==1.4.0").replace("pandas==2.0.3", "pandas==2.2.2")
    )
    return locked(first), locked(second)


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_two_fraud_locks_name_each_change_with_its_step(fraud_locks: tuple[Path, Path]) -> None:
    a, b = fraud_locks
    result = run_cli("diff", str(a), str(b))
    assert result.code == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "  pandas: upgraded 2.0.3 -> 2.2.2 (minor)" in lines, result.stdout
    assert "  scikit-learn: downgraded 1.4.2 -> 1.4.0 (patch)" in lines, result.stdout
    digests = [line for line in lines if line.startswith("  digest: changed sha256:")]
    assert len(digests) == 1 and re.fullmatch(
        r"  digest: changed sha256:[0-9a-f]{64} -> sha256:[0-9a-f]{64}; "
        r"the spec names \S+/bookworm-python:1 -> \S+/bookworm-python-relabelled:1",
        digests[0],
    ), result.stdout
    # The same layers and OS under another digest; the same dpkg set and interpreter.
    assert not any(line.startswith("  layer") or line.startswith("  os-") for line in lines)
    assert any(line.startswith("apt: same (") for line in lines)
    assert "python-interpreter: same (3.11.2 at /opt/venv/bin/python3.11)" in lines
    # The same model file, but B pins the library that wrote it a patch release away: lock's warning.
    assert "models: 1 change" in lines
    assert (
        "  /app/models/model.joblib load warning: added written by scikit-learn 1.4.2; "
        "the lock pins scikit-learn 1.4.0, a patch release apart"
    ) in lines, result.stdout

    data = json.loads(run_cli("diff", str(a), str(b), "--format", "json").stdout)
    assert data["equal"] is False
    layers = {layer["layer"]: layer for layer in data["layers"]}
    steps = {c["subject"]: (c["kind"], c["a"], c["b"], c["step"]) for c in layers["python"]["changes"]}
    assert steps["pandas"] == ("upgraded", "2.0.3", "2.2.2", "minor")
    assert steps["scikit-learn"] == ("downgraded", "1.4.2", "1.4.0", "patch")
    assert [c["subject"] for c in layers["base"]["changes"]] == ["digest"]

    markdown = run_cli("diff", str(a), str(b), "--format", "markdown").stdout.splitlines()
    assert "| pandas | upgraded | `2.0.3` | `2.2.2` | minor |  |" in markdown
    assert "| scikit-learn | downgraded | `1.4.2` | `1.4.0` | patch |  |" in markdown
    assert "#### base" in markdown and "#### python" in markdown

    same = run_cli("diff", str(a), str(a.parent))
    assert same.code == 0, same.stdout + same.stderr


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_a_lock_and_its_built_image_are_the_same(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    archive = tmp_path / "fraud.tar"
    with archive.open("wb") as handle:
        for chunk in docker_daemon.client.images.get(fraud_image.tag).save(named=True):
            handle.write(chunk)
    for image in (f"docker-daemon:{fraud_image.tag}", fraud_image.tag, f"docker-archive:{archive}"):
        result = run_cli("diff", str(fraud_image.lock), image)
        assert result.code == 0, result.stdout + result.stderr
        assert "models: same (1 model)" in result.stdout.splitlines()
        assert "python: same (" in result.stdout
    # And the other way round, the image first.
    back = run_cli("diff", f"docker-daemon:{fraud_image.tag}", str(fraud_image.lock))
    assert back.code == 0, back.stdout + back.stderr


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_a_drifted_image_differs_from_its_lock(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    site = "/opt/venv/lib/python3.11/site-packages"
    tag = derive_image(
        docker_daemon,
        tmp_path,
        fraud_image.tag,
        lock_tag("fraud", fraud_image.lock, "diff-drift"),
        [f"RUN rm -rf {site}/six-*.dist-info && echo tampered >> /app/models/model.joblib"],
    )
    result = run_cli("diff", str(fraud_image.lock), f"docker-daemon:{tag}")
    assert result.code == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(r"  six: removed \(A has [0-9.]+\)", line) for line in lines), result.stdout
    lock_sha = next(
        m.sha256 for m in read_lock(fraud_image.lock).models if m.target == "/app/models/model.joblib"
    )
    assert any(
        re.fullmatch(rf"  /app/models/model.joblib: changed {lock_sha} -> [0-9a-f]{{64}}", line)
        for line in lines
    ), result.stdout
    assert lines[-1] == "A and B differ in python, models (2 changes)"
    # Two images: the base by its label, the packages of the app's site; models are not compared.
    images = run_cli("diff", fraud_image.tag, f"docker-daemon:{tag}")
    assert images.code == 1, images.stdout + images.stderr
    assert "models: not compared: an image states models only at the paths a lock names" in images.stdout
    assert any(line.startswith("  six: removed") for line in images.stdout.splitlines())


def torch_project(directory: Path, torch: str, cuda: str) -> Path:
    """A GPU project of torch alone, no base: locked against real PyPI metadata, no wheel downloaded."""
    directory.mkdir(parents=True)
    (directory / "mlenv.toml").write_text(
        f'name = "gpu"\nas-of = 2025-01-15T00:00:00Z\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
        f'[python]\nrequirements = ["{torch}"]\n[cuda]\nversion = "{cuda}"\n'
    )
    return directory


@pytest.mark.network
def test_torch_2_3_1_against_2_5_1_names_cudnn_8_to_9_and_the_driver_floor(tmp_path: Path) -> None:
    a = locked(torch_project(tmp_path / "t231", "torch==2.3.1", "12.1"))
    b = locked(torch_project(tmp_path / "t251", "torch==2.5.1", "12.4"))
    result = run_cli("diff", str(a), str(b))
    assert result.code == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "  torch: upgraded 2.3.1 -> 2.5.1 (minor)" in lines, result.stdout
    assert "  nvidia-cudnn-cu12: upgraded 8.9.2.26 -> 9.1.0.70 (major)" in lines, result.stdout
    assert "  cudnn: upgraded 8.9.2.26 -> 9.1.0.70 (major)" in lines, result.stdout
    assert any(
        line.startswith("  cuDNN major: upgraded 8 -> 9 (major); libcudnn.so.8 and libcudnn.so.9 are not")
        for line in lines
    )
    # The floor each side implies is the one its lock records (min-driver counts every toolkit-versioned
    # wheel: PyPI's torch 2.3.1 leaves nvJitLink unpinned, so it resolves to a newer 12.x than 2.5.1 pins).
    floor_a, floor_b = (read_lock(path).cuda.min_driver for path in (a, b))
    assert floor_a and floor_b and floor_a != floor_b
    kind = "raised" if version_key(floor_b) > version_key(floor_a) else "lowered"
    assert any(line.startswith(f"  driver floor: {kind} {floor_a} -> {floor_b}; ") for line in lines), (
        result.stdout
    )
    assert "base: not compared: A (lock) and B (lock) state no base image" in lines
    data = json.loads(run_cli("diff", str(a), str(b), "-f", "json").stdout)
    cuda = {c["subject"]: c for layer in data["layers"] if layer["layer"] == "cuda" for c in layer["changes"]}
    assert (cuda["cuDNN major"]["a"], cuda["cuDNN major"]["b"]) == ("8", "9")
    assert (cuda["driver floor"]["kind"], cuda["driver floor"]["b"]) == (kind, floor_b)
    assert (cuda["CUDA release"]["a"], cuda["CUDA release"]["b"]) == ("12.1", "12.4")
    markdown = run_cli("diff", str(a), str(b), "-f", "markdown").stdout.splitlines()
    assert "| cuDNN major | upgraded | `8` | `9` | major | " in "\n".join(markdown)
    assert any(row.startswith(f"| driver floor | {kind} | `{floor_a}` | `{floor_b}` |") for row in markdown)
