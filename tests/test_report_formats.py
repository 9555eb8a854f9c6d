"""Verify reports as text, JSON (schema) and JUnit (the Jenkins xUnit schema)."""

from __future__ import annotations

import json
from pathlib import Path

import xmlschema

from mlenv.model.report import Drift, Report
from mlenv.model.schema import first_error
from mlenv.verify.formats import as_json, as_junit, as_text

LAYERS = ("base", "apt", "python", "models")
DRIFTED = Report(subject="docker-daemon:fraud:bad", layers=LAYERS, drifts=(
    Drift(layer="python", kind="version", subject="pandas", expected="2.0.3", actual="1.5.3"),
    Drift(layer="apt", kind="extra", subject="vim:amd64", expected=None, actual="2:9.0 <&>"),
))
CLEAN = Report(subject="fraud:1", layers=LAYERS)
JUNIT_XSD = Path(__file__).parent / "fixtures" / "junit" / "junit-10.xsd"


def test_text_is_a_checklist_with_one_line_per_drift() -> None:
    text = as_text(DRIFTED)
    assert "  [ok] base\n" in text and "  [DRIFT] python\n" in text
    assert "      python: pandas: version: expected 2.0.3, found 1.5.3\n" in text
    assert text.endswith("docker-daemon:fraud:bad: 2 drift(s) from the lock\n")
    assert as_text(CLEAN).endswith("fraud:1: matches the lock\n")


def test_json_validates_against_the_published_schema() -> None:
    for report in (DRIFTED, CLEAN):
        data = json.loads(as_json(report))
        assert first_error(data, "report") is None
    assert json.loads(as_json(DRIFTED))["verdict"] == "drift"


def test_junit_is_valid_and_has_one_case_per_layer() -> None:
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    for report in (DRIFTED, CLEAN):
        xml = as_junit(report)
        schema.validate(xml)
        assert xml.count("<testcase ") == len(LAYERS)
    drifted = as_junit(DRIFTED)
    assert drifted.count("<failure ") == 2 and "&lt;&amp;&gt;" in drifted
