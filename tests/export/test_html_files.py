"""The HTML page carries verify's file accounting (its own section, one row per file drift, counted by
kind) and the policy findings, apart from the lock's layers."""

from __future__ import annotations

import dataclasses
import re

from mlenv.export import export
from mlenv.model.report import Drift, Finding
from mlenv.verify.accounting import with_files
from tests.export.data import drifted_report, image_context
from tests.lockdata import full_lock

SITE = "/opt/venv/lib/python3.11/site-packages"
FILE_DRIFTS = (
    Drift(
        layer="files",
        kind="extra",
        subject=f"{SITE}/zz-startup.pth",
        actual="sha256:" + "1" * 64 + " 30 bytes mode 0644 in layer 9 of 9 (RUN echo)",
    ),
    Drift(
        layer="files",
        kind="modified",
        subject="/app/app/main.py",
        expected="sha256:" + "2" * 64 + " 120 bytes from app:app/main.py",
        actual="sha256:" + "3" * 64 + " 130 bytes mode 0644 in layer 9 of 9 (RUN echo)",
    ),
    Drift(
        layer="files",
        kind="reinstalled",
        subject="six-1.16.0-py2.py3-none-any.whl",
        expected="installed once, in the venv step, from wheel:six-1.16.0-py2.py3-none-any.whl",
        actual=f"installed again in layer 9 of 9 (RUN pip) into {SITE}: RECORD modified",
    ),
)


def section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert match, f"no section {name}"
    return match.group(1)


def test_the_files_section_lists_each_file_drift_with_both_sides() -> None:
    lock = full_lock()
    report = with_files(drifted_report(lock), FILE_DRIFTS)
    page = export("html", lock, report, image_context(lock)).decode()
    files = section(page, "layer-files")
    assert '<span class="badge drift">DRIFT</span>' in files
    assert "3 file drift(s) above the base: 1 extra, 1 modified, 1 reinstalled." in files
    rows = re.findall(r'<tr class="drift">(.*?)</tr>', files)
    assert len(rows) == 3
    assert any(f"{SITE}/zz-startup.pth" in r and "extra" in r and "layer 9 of 9" in r for r in rows)
    assert any("/app/app/main.py" in r and "2" * 64 in r and "3" * 64 in r for r in rows)
    assert any("six-1.16.0-py2.py3-none-any.whl" in r and f"into {SITE}" in r for r in rows)
    # after the lock's layers, before the identities
    assert page.index('id="layer-labels"') < page.index('id="layer-files"') < page.index('id="identity"')


def test_the_files_section_says_ok_or_not_checked() -> None:
    lock = full_lock()
    report = drifted_report(lock)
    unchecked = section(export("html", lock, report, image_context(lock)).decode(), "layer-files")
    assert "not checked" in unchecked and "<tr" not in unchecked
    clean = dataclasses.replace(report, drifts=())
    ok = section(export("html", lock, with_files(clean, []), image_context(lock)).decode(), "layer-files")
    assert '<span class="badge ok">ok</span>' in ok and "explained by the lock, byte for byte" in ok
    lock_only = section(export("html", lock, None, image_context(lock)).decode(), "layer-files")
    assert "not checked" in lock_only


def test_policy_findings_have_their_own_section() -> None:
    lock = full_lock()
    finding = Finding(
        rule="credentials", subject="Env DB_PASSWORD", detail="a value of a *_PASSWORD variable"
    )
    report = dataclasses.replace(drifted_report(lock), findings=(finding,))
    policy = section(export("html", lock, report, image_context(lock)).decode(), "policy")
    assert "Policy findings (1)" in policy and "Env DB_PASSWORD" in policy and "*_PASSWORD" in policy
    assert 'id="policy"' not in export("html", lock, drifted_report(lock), image_context(lock)).decode()
