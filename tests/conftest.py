"""Test policy shared by every test module.

Integration tests use the real thing (Docker engine, distribution registry, PyPI, Debian). Locally a
missing component skips with a reason; with CI=true it is a failure, never a skip.
"""

from __future__ import annotations

import os
import socket

import pytest

from tools.localbase.bytecode import compile_mlenv

IN_CI = os.environ.get("CI", "").lower() == "true"

# Shared fixtures live in tests/infra/ (over tools/localbase): the Docker engine, loopback registries,
# test base images and the session's fraud image.
pytest_plugins = ["tests.infra.docker", "tests.infra.registry", "tests.infra.images", "tests.infra.fraud"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite starts `python -m mlenv` hundreds of times: each starts as an installed mlenv would."""
    compile_mlenv()


def missing(component: str, reason: str) -> None:
    """Skip (locally) or fail (in CI) a test whose real component is not available."""
    message = f"{component} unavailable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing component is a failure)", pytrace=False)
    pytest.skip(message)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def network() -> None:
    """PyPI and the Debian mirror are reachable."""
    for host, port in (("pypi.org", 443), ("deb.debian.org", 80)):
        if not _reachable(host, port):
            missing("network", f"cannot connect to {host}:{port}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test marked `network` gets the reachability check without asking for the fixture.
    for item in items:
        names = getattr(item, "fixturenames", [])
        if item.get_closest_marker("network") is not None and "network" not in names:
            item.fixturenames.append("network")  # type: ignore[attr-defined]


INTEGRATION_MARKERS = ("network", "docker", "registry")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI an integration test that skipped, for whatever reason, is reported as failed."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and any(item.get_closest_marker(m) for m in INTEGRATION_MARKERS):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: integration test {item.nodeid} skipped ({report.longrepr}); that is a failure"
        )
