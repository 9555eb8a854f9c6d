"""What the tests, bench/ and scripts/demo.py share: local stand-ins for what this machine may not reach.

A Docker engine (the one DOCKER_HOST names, or a dockerd started here), Debian's distribution registry on
127.0.0.1, Debian bookworm base images made by debootstrap, the cache that keeps the slow parts between
runs, and the example project with its model trained. Plain modules, no pytest: a component this machine
lacks raises `Unavailable`, which the test fixtures turn into a skip (locally) or a failure (in CI) and
the scripts print.
"""

from __future__ import annotations


class Unavailable(Exception):
    """A component (a program, root, the engine) this machine does not have."""

    def __init__(self, component: str, reason: str) -> None:
        super().__init__(f"{component} unavailable: {reason}")
        self.component = component
        self.reason = reason
