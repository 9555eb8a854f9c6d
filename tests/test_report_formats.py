"""Verify reports as text, JSON (schema) and JUnit (the Jenkins xUnit schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xmlschema

from mlenv.model.report import KINDS, Drift, Layer, Report
from mlenv.model.report import LAYERS as LAYER_NAMES
from mlenv.model.schema import first_error, load_schema
from mlenv.verify.compare import drift_line
from mlenv.verify.formats import (
    FORMATS,
    DataFormat,
    ReportFormat,
    UnknownFormatError,
    as_json,
    as_junit,
    as_text,
    parse_format,
)

LAYERS: tuple[Layer, ...] = ("base", "apt", "python", "python-files", "models")
DRIFTED = Report(
    subject="docker-daemon:fraud:bad",
    layers=LAYERS,
    drifts=(
        Drift(layer="python", kind="version", subject="pandas", expected="2.0.3", actual="1.5.3"),
        Drift(layer="apt", kind="extra", subject="vim", architecture="amd64", actual="2:9.0 <&>"),
        Drift(
            layer="apt",
            kind="arch",
            subject="libgomp1",
            architecture="amd64",
            expected="12.2.0-14",
            actual_architecture="i386",
            actual="12.2.0-14",
        ),
        Drift(layer="python-files", kind="modified", subject="pandas", file="pandas/__init__.py"),
    ),
)
CLEAN = Report(subject="fraud:1", layers=LAYERS)
JUNIT_XSD = Path(__file__).parent / "fixtures" / "junit" / "junit-10.xsd"


def test_text_is_a_checklist_with_one_line_per_drift() -> None:
    text = as_text(DRIFTED)
    assert "  [ok] base\n" in text and "  [DRIFT] python\n" in text
    assert "      python: pandas: version: expected 2.0.3, found 1.5.3\n" in text
    assert "      apt: vim:amd64: extra (found 2:9.0 <&>, not in the lock)\n" in text
    assert "      apt: libgomp1: arch: expected amd64 12.2.0-14, found i386 12.2.0-14\n" in text
    assert (
        "      python-files: pandas: pandas/__init__.py: modified (hash in RECORD; found different content)\n"
        in text
    )
    assert text.endswith("docker-daemon:fraud:bad: 4 drift(s) from the lock\n")
    assert as_text(CLEAN).endswith("fraud:1: matches the lock\n")


def test_json_validates_against_the_published_schema() -> None:
    for report in (DRIFTED, CLEAN):
        data = json.loads(as_json(report))
        assert first_error(data, "report") is None
    data = json.loads(as_json(DRIFTED))
    assert data["verdict"] == "drift" and data["report-version"] == 2
    # The drift's parts are fields; the message is the line the text report prints.
    assert data["drifts"][1] == {
        "layer": "apt",
        "kind": "extra",
        "subject": "vim",
        "architecture": "amd64",
        "actual-architecture": None,
        "file": None,
        "expected": None,
        "actual": "2:9.0 <&>",
        "message": "apt: vim:amd64: extra (found 2:9.0 <&>, not in the lock)",
    }
    assert [d["message"] for d in data["drifts"]] == [drift_line(d) for d in DRIFTED.drifts]
    assert data["drifts"][3]["file"] == "pandas/__init__.py" and data["drifts"][3]["subject"] == "pandas"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"architecture": None}, "drifts[1].architecture"),  # an apt drift names its architecture
        ({"layer": "python"}, "drifts[1].architecture"),  # and only an apt drift has one
        ({"file": "x.py"}, "drifts[1].file"),  # a file belongs to a python-files drift only
        ({"kind": "renamed"}, "drifts[1].kind"),
        ({"layer": "network"}, "drifts[1].layer"),
    ],
)
def test_json_schema_rejects_a_drift_whose_fields_disagree(change: dict[str, object], where: str) -> None:
    data = json.loads(as_json(DRIFTED))
    data["drifts"][1].update(change)
    error = first_error(data, "report")
    assert error is not None and error[0] == where, error


def test_junit_is_valid_and_has_one_case_per_layer() -> None:
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    for report in (DRIFTED, CLEAN):
        xml = as_junit(report)
        schema.validate(xml)
        assert xml.count("<testcase ") == len(LAYERS)
    drifted = as_junit(DRIFTED)
    assert drifted.count("<failure ") == 3 and "&lt;&amp;&gt;" in drifted


def test_the_schema_names_the_layers_and_kinds_a_drift_can_have() -> None:
    schema = load_schema("report")
    assert tuple(schema["$defs"]["layer"]["enum"]) == LAYER_NAMES
    assert tuple(schema["$defs"]["drift"]["properties"]["kind"]["enum"]) == KINDS


def test_each_format_choice_is_named_once_and_checked_one_way() -> None:
    assert parse_format(ReportFormat, "junit") is ReportFormat.JUNIT and FORMATS["junit"] is as_junit
    assert set(FORMATS) == set(ReportFormat)
    error = "^--format: unknown format 'xml'; choose one of text, json$"
    with pytest.raises(UnknownFormatError, match=error):
        parse_format(DataFormat, "xml")
