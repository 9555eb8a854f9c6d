"""`mlenv export` as a user runs it: real exit codes, output files written whole or not at all."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from mlenv.lockfile import write_lock
from tests.helpers import run_cli
from tests.lockdata import full_lock


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_lock(full_lock(), tmp_path / "mlenv.lock")
    return tmp_path


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlenv: error: "), stderr
    return lines[0]


def test_unknown_format_is_exit_2_naming_the_valid_ones(project: Path) -> None:
    result = run_cli("export", str(project), "--format", "sbom")
    assert result.code == 2 and result.stdout == ""
    assert "cyclonedx, spdx, intoto, html, json, pylock" in one_line_error(result.stderr)


def test_missing_lock_names_the_file(tmp_path: Path) -> None:
    result = run_cli("export", str(tmp_path), "--format", "json")
    assert result.code == 2 and f"{tmp_path / 'mlenv.lock'}: no such file" in one_line_error(result.stderr)
    result = run_cli("export", str(tmp_path / "nowhere"), "--format", "json")
    assert result.code == 2 and "nowhere: no such project directory" in one_line_error(result.stderr)


def test_invalid_lock_names_the_key(project: Path) -> None:
    lock = project / "mlenv.lock"
    lock.write_text(lock.read_text().replace('resolver = "uv"', 'resolver = "conda"'))
    result = run_cli("export", "--lock", str(lock), "--format", "spdx")
    assert result.code == 2 and "python.resolver" in one_line_error(result.stderr)


def test_output_file_equals_stdout_and_is_replaced_whole(project: Path) -> None:
    target = project / "out" / "sbom.cdx.json"
    written = run_cli("export", str(project), "--format", "cyclonedx", "-o", str(target))
    printed = run_cli("export", str(project), "--format", "cyclonedx")
    assert written.code == printed.code == 0 and written.stdout == ""
    assert target.read_text() == printed.stdout
    assert [p.name for p in target.parent.iterdir()] == ["sbom.cdx.json"]  # no temp file left behind


def test_a_failed_export_leaves_the_old_file_untouched(project: Path) -> None:
    target = project / "report.html"
    target.write_text("previous report")
    result = run_cli(
        "export",
        str(project),
        "--format",
        "html",
        "--image",
        f"docker-archive:{project}/none.tar",
        "-o",
        str(target),
    )
    assert result.code == 2 and "none.tar" in one_line_error(result.stderr)
    assert target.read_text() == "previous report" and sorted(p.name for p in project.iterdir()) == [
        "mlenv.lock",
        "report.html",
    ]


def test_platform_outside_the_lock_is_an_error(project: Path) -> None:
    result = run_cli("export", str(project), "--format", "json", "--platform", "linux/s390x")
    assert result.code == 2 and "linux/amd64, linux/arm64" in one_line_error(result.stderr)


def test_source_date_epoch_dates_a_lock_without_as_of(tmp_path: Path) -> None:
    write_lock(dataclasses.replace(full_lock(), as_of=None), tmp_path / "mlenv.lock")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    first = run_cli("export", str(tmp_path), "--format", "spdx", env=env)
    second = run_cli("export", str(tmp_path), "--format", "spdx", env=env)
    assert first.code == 0 and first.stdout == second.stdout
    assert json.loads(first.stdout)["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    bad = run_cli(
        "export", str(tmp_path), "--format", "spdx", env={**os.environ, "SOURCE_DATE_EPOCH": "later"}
    )
    assert bad.code == 2 and "SOURCE_DATE_EPOCH" in one_line_error(bad.stderr)
