"""The lock's [cuda] table: an unset [cuda] version is recorded as what the stack was found to be
(release = "12.1", no requested), a CPU-only lock keeps requested = "none", old lock-version 1 locks
that wrote requested = "none" for a found stack still load, validate and give verify its expectations;
and the spec's cuda keys name their accepted forms."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from mlenv.lockfile import dumps, loads
from mlenv.model.lock import LockedCuda
from mlenv.model.schema import first_error
from mlenv.verify.expected import expected_facts
from tests.helpers import run_cli
from tests.lockdata import full_lock


def _cuda_table(text: str) -> dict:  # type: ignore[type-arg]
    return tomllib.loads(text)["cuda"]


def test_an_unset_request_is_recorded_as_found() -> None:
    lock = full_lock()
    unset = dataclasses.replace(lock, cuda=dataclasses.replace(lock.cuda, requested="none", release="12.1"))
    text = dumps(unset)
    table = _cuda_table(text)
    assert "requested" not in table and table["release"] == "12.1"
    assert first_error(tomllib.loads(text), "mlenv.lock") is None
    again = loads(text)
    assert again.cuda == unset.cuda and dumps(again) == text


def test_a_request_and_a_cpu_only_lock_keep_requested() -> None:
    lock = full_lock()
    asked = dataclasses.replace(lock, cuda=dataclasses.replace(lock.cuda, release="12.1"))
    assert _cuda_table(dumps(asked))["requested"] == "12.1"
    cpu = dataclasses.replace(lock, cuda=LockedCuda(requested="none"))
    assert _cuda_table(dumps(cpu)) == {"requested": "none"}
    assert first_error(tomllib.loads(dumps(cpu)), "mlenv.lock") is None


def test_an_old_none_lock_with_a_stack_still_loads_and_verifies() -> None:
    lock = full_lock()
    # As mlenv wrote it before `release`: requested = "none" beside the stack it found.
    old = dataclasses.replace(lock, cuda=dataclasses.replace(lock.cuda, requested="none"))
    text = dumps(old)
    assert _cuda_table(text)["requested"] == "none" and "release" not in _cuda_table(text)
    assert first_error(tomllib.loads(text), "mlenv.lock") is None
    loaded = loads(text)
    assert loaded.cuda == old.cuda and dumps(loaded) == text  # byte-identical round trip
    facts = expected_facts(loaded, lock_digest="sha256:" + "0" * 64, platform="linux/amd64")
    assert {c.name: c.version for c in facts.cuda} == {c.name: c.version for c in lock.cuda.components}


def test_a_table_without_either_key_is_refused() -> None:
    text = dumps(full_lock()).replace('requested = "12.1"\n', "")
    assert first_error(tomllib.loads(text), "mlenv.lock") is not None


def test_cuda_version_errors_name_the_accepted_forms(tmp_path: Path) -> None:
    for value, shown in (('"12"', "'12'"), ("12.1", "12.1 (not a string)"), ('"12.1.0"', "'12.1.0'")):
        project = tmp_path / f"p{len(shown)}"
        project.mkdir()
        (project / "mlenv.toml").write_text(
            f'name = "x"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n[cuda]\nversion = {value}\n'
        )
        result = run_cli("lock", str(project))
        assert result.code == 2 and not (project / "mlenv.lock").exists()
        assert result.stderr.strip().splitlines() == [
            f"mlenv: error: {project / 'mlenv.toml'}: cuda.version: {shown} is not accepted; the accepted "
            'forms are "MAJOR.MINOR" (e.g. "12.1") or "none"'
        ], result.stderr
    (project / "mlenv.toml").write_text(
        'name = "x"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n[cuda]\ncudnn = "v9"\n'
    )
    result = run_cli("lock", str(project))
    assert (
        result.code == 2
        and "cuda.cudnn: 'v9' is not accepted; the accepted forms are a cuDNN version" in (result.stderr)
    )
