"""A verify Report as text (a checklist per layer), JSON (schemas/report.schema.json) or JUnit XML,
and the one place each command's `--format` choices are named and checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar
from xml.etree import ElementTree

from mlenv.errors import MlenvError
from mlenv.model.report import Drift, Report
from mlenv.verify.compare import drift_line
from mlenv.verify.policy import finding_line


class ReportFormat(StrEnum):
    """What `mlenv verify --format` prints."""

    TEXT = "text"
    JSON = "json"
    JUNIT = "junit"


class DataFormat(StrEnum):
    """What `mlenv inspect` and `mlenv check` print: a summary for people, or JSON."""

    TEXT = "text"
    JSON = "json"


class PolicyMode(StrEnum):
    """What `mlenv verify --policy` does with policy findings: report them, or also fail on them."""

    WARN = "warn"
    FAIL = "fail"


F = TypeVar("F", bound=StrEnum)


class UnknownFormatError(MlenvError):
    def __init__(
        self, value: str, choices: type[StrEnum], *, what: str = "format", option: str = "--format"
    ) -> None:
        super().__init__(f"{option}: unknown {what} {value!r}; choose one of {', '.join(choices)}")


def parse_format(choices: type[F], value: str, *, what: str = "format", option: str = "--format") -> F:
    """`value` as one of `choices`, or the one error every command gives for a choice it lacks,
    naming the option it came from."""
    try:
        return choices(value)
    except ValueError:
        raise UnknownFormatError(value, choices, what=what, option=option) from None


# 2: a drift's subject is the bare name; its architecture and file are fields of their own.
REPORT_VERSION = 2


def as_text(report: Report) -> str:
    lines = [f"verify {report.subject}"]
    for layer in report.layers:
        drifts = [d for d in report.drifts if d.layer == layer]
        lines.append(f"  [{'ok' if not drifts else 'DRIFT'}] {layer}")
        lines += [f"      {drift_line(d)}" for d in drifts]
    if report.findings:
        # Not drifts: the rules of production use an image breaks (verify.policy).
        lines.append(f"  policy: {len(report.findings)} finding(s)")
        lines += [f"      {finding_line(f)}" for f in report.findings]
    verdict = "matches the lock" if report.ok else f"{len(report.drifts)} drift(s) from the lock"
    lines.append(f"{report.subject}: {verdict}")
    return "\n".join(lines) + "\n"


def as_data(report: Report) -> dict[str, object]:
    return {
        "report-version": REPORT_VERSION,
        "subject": report.subject,
        "verdict": "match" if report.ok else "drift",
        "layers": [
            {"name": layer, "ok": not any(d.layer == layer for d in report.drifts)} for layer in report.layers
        ],
        "drifts": [drift_data(d) for d in report.drifts],
        "findings": [
            {"rule": f.rule, "subject": f.subject, "detail": f.detail, "message": finding_line(f)}
            for f in report.findings
        ],
    }


def drift_data(drift: Drift) -> dict[str, object]:
    """Every field of the drift, null where it does not apply, and the line `as_text` prints."""
    return {
        "layer": drift.layer,
        "kind": drift.kind,
        "subject": drift.subject,
        "architecture": drift.architecture,
        "actual-architecture": drift.actual_architecture,
        "file": drift.file,
        "expected": drift.expected,
        "actual": drift.actual,
        "message": drift_line(drift),
    }


def as_json(report: Report) -> str:
    return json.dumps(as_data(report), indent=2, sort_keys=True) + "\n"


def as_junit(report: Report) -> str:
    """One <testcase> per layer, failing with its drift lines, so CI systems show it natively."""
    suite = ElementTree.Element(
        "testsuite",
        {
            "name": f"mlenv verify {report.subject}",
            "tests": str(len(report.layers)),
            "failures": str(len({d.layer for d in report.drifts})),
            "errors": "0",
            "skipped": "0",
        },
    )
    for layer in report.layers:
        case = ElementTree.SubElement(suite, "testcase", {"classname": "mlenv.verify", "name": layer})
        drifts = [d for d in report.drifts if d.layer == layer]
        if drifts:
            failure = ElementTree.SubElement(
                case, "failure", {"message": f"{len(drifts)} drift(s) in {layer}", "type": "drift"}
            )
            failure.text = "\n".join(drift_line(d) for d in drifts)
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    if report.findings:
        # Policy findings in a suite of their own, one failing case per rule, so a CI page shows them
        # apart from the lock's drifts (whether they fail the job is `--policy`'s exit code).
        policy = ElementTree.SubElement(
            suites,
            "testsuite",
            {
                "name": f"mlenv policy {report.subject}",
                "tests": str(len({f.rule for f in report.findings})),
                "failures": str(len({f.rule for f in report.findings})),
                "errors": "0",
                "skipped": "0",
            },
        )
        for rule in sorted({f.rule for f in report.findings}):
            case = ElementTree.SubElement(policy, "testcase", {"classname": "mlenv.policy", "name": rule})
            found = [f for f in report.findings if f.rule == rule]
            failure = ElementTree.SubElement(
                case, "failure", {"message": f"{len(found)} finding(s): {rule}", "type": "policy"}
            )
            failure.text = "\n".join(finding_line(f) for f in found)
    ElementTree.indent(suites)
    body = ElementTree.tostring(suites, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def junit_documents(documents: list[str]) -> str:
    """Several as_junit documents as one: every <testsuite> under one <testsuites>."""
    suites = ElementTree.Element("testsuites")
    for document in documents:
        suites.extend(ElementTree.fromstring(document.split("\n", 1)[1]))
    ElementTree.indent(suites)
    body = ElementTree.tostring(suites, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


FORMATS: dict[ReportFormat, Callable[[Report], str]] = {
    ReportFormat.TEXT: as_text,
    ReportFormat.JSON: as_json,
    ReportFormat.JUNIT: as_junit,
}
