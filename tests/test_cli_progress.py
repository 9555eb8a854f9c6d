"""The CLI answers at once: progress on a terminal's stderr only, root flags after the command, help on a
bare `mlenv`, installable shell completion.

The lock runs offline (UV_OFFLINE: a target from the spec and no requirements, so uv needs no index),
in a real pseudo-terminal driven by pexpect, with stdout sent to a file so the terminal shows stderr alone.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pexpect
import pytest
import requests

from mlenv.cli.app import root_flags_first
from mlenv.lockfile import lock_digest
from mlenv.progress import Silent, Task, current, showing
from mlenv.sources.engine import Engine
from mlenv.sources.http import CHUNK, download_chunks
from tests.helpers import Built, run_cli
from tools.localbase.dockerd import Daemon

SPEC = 'name = "progress"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
ESCAPE = "\x1b["  # any terminal control sequence: a spinner, a cursor move, a colour


def offline_env() -> dict[str, str]:
    return {**os.environ, "UV_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mlenv.toml").write_text(SPEC)
    return tmp_path


def lock_in_terminal(project: Path, *flags: str) -> tuple[str, str]:
    """What a terminal shows while `mlenv lock` runs (stderr), and what went to stdout (a file)."""
    stdout = project / "stdout.txt"
    command = " ".join(
        shlex.quote(word) for word in (sys.executable, "-m", "mlenv", "lock", str(project), *flags)
    )
    child = pexpect.spawn(
        "/bin/sh",
        ["-c", f"{command} > {shlex.quote(str(stdout))}"],
        env=offline_env(),
        encoding="utf-8",
        timeout=120,
        dimensions=(24, 120),
    )
    shown = child.read()
    child.close()
    assert child.exitstatus == 0, shown
    return shown, stdout.read_text()


def test_lock_shows_progress_on_a_terminal_and_none_when_piped(project: Path) -> None:
    shown, stdout = lock_in_terminal(project)
    # The last step is always drawn (rich renders a final frame before it clears the line).
    assert "lock: checking the CUDA stack, hashing models" in shown, shown
    assert ESCAPE in shown  # drawn in place, not printed as lines
    assert stdout == f"{project / 'mlenv.lock'}: written\n"  # stdout stays clean for scripts

    (project / "mlenv.lock").unlink()
    piped = run_cli("lock", str(project), env=offline_env())
    assert piped.code == 0, piped.stderr
    assert piped.stderr == ""  # no progress, and no control sequence, into a pipe or a log
    assert piped.stdout == stdout


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_quiet_draws_nothing_even_on_a_terminal(project: Path, flag: str) -> None:
    shown, stdout = lock_in_terminal(project, flag)  # the flag after the command, too
    assert "lock:" not in shown and ESCAPE not in shown, shown
    assert stdout.endswith(": written\n")


def test_verbose_after_the_command_is_accepted(project: Path) -> None:
    missing = project / "absent"
    after = run_cli("lock", str(missing), "-v")
    before = run_cli("-v", "lock", str(missing))
    assert after.code == before.code == 2
    assert "No such option" not in after.stderr
    assert "Traceback" in after.stderr  # -v took effect: the traceback is shown
    assert after.stderr.splitlines()[-1] == before.stderr.splitlines()[-1]


def test_root_flags_move_before_the_command_but_not_past_a_double_dash() -> None:
    assert root_flags_first(["lock", ".", "-v"]) == ["-v", "lock", "."]
    moved = root_flags_first(["build", "-q", "-t", "x", "--verbose"])
    assert moved == ["-q", "--verbose", "build", "-t", "x"]
    assert root_flags_first(["lock", "--", "-v"]) == ["lock", "--", "-v"]


def test_bare_mlenv_prints_help_and_exits_0() -> None:
    result = run_cli()
    assert result.code == 0, result.stderr
    assert "Usage: mlenv" in result.stdout and "lock" in result.stdout
    assert "error" not in result.stderr


def test_shell_completion_is_installable() -> None:
    shown = run_cli("--show-completion", "bash", env={**os.environ, "SHELL": "/bin/bash"})
    assert shown.code == 0, shown.stderr
    assert "_MLENV_COMPLETE" in shown.stdout and "complete " in shown.stdout
    # What the shell runs on TAB: the command names come back, every command registered for it.
    env = {**os.environ, "_MLENV_COMPLETE": "complete_bash", "COMP_WORDS": "mlenv lo", "COMP_CWORD": "1"}
    completed = run_cli(env=env)
    assert completed.code == 0, completed.stderr
    assert "lock" in completed.stdout.split()


@dataclass
class Recorded:
    """A Progress that keeps what the library reported: steps, and per task its total and advances."""

    steps: list[str] = field(default_factory=list)
    tasks: dict[str, tuple[int | None, list[int]]] = field(default_factory=dict)

    def step(self, text: str) -> None:
        self.steps.append(text)

    @contextmanager
    def task(self, text: str, total: int | None) -> Iterator[Task]:
        advances: list[int] = []
        self.tasks[text] = (total, advances)

        class Advance:
            def advance(self, amount: int) -> None:
                advances.append(amount)

        yield Advance()


class StreamApi:
    def build(self, **options: Any) -> Iterator[dict[str, Any]]:
        yield {"stream": "Step 1/2 : FROM base\n"}
        yield {"stream": "\n"}
        yield {"aux": {"ID": "sha256:abc"}}


class StreamClient:
    api = StreamApi()


def test_the_engine_build_stream_reports_each_line_as_a_step() -> None:
    recorded = Recorded()
    with showing(recorded):
        chunks = list(Engine(StreamClient()).build(path=".", tag="x:1"))  # type: ignore[arg-type]
    assert chunks[-1] == {"aux": {"ID": "sha256:abc"}}  # every chunk still reaches the builder
    assert recorded.steps == ["build: Step 1/2 : FROM base"]


def test_a_download_reports_its_bytes_against_content_length(tmp_path: Path) -> None:
    body = bytes(range(256)) * (3 * CHUNK // 256 + 1)  # more than three chunks: several advances
    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(body)
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = requests.Session()
    session.trust_env = False  # the machine's proxy settings must not route a loopback request
    recorded = Recorded()
    try:
        url = f"http://127.0.0.1:{server.server_port}/pkg-1.0-py3-none-any.whl"
        with showing(recorded):
            received = b"".join(download_chunks(url, session=session))
    finally:
        server.shutdown()
        server.server_close()
    assert received == body
    total, advances = recorded.tasks["fetch pkg-1.0-py3-none-any.whl"]
    assert total == len(body) and sum(advances) == len(body) and len(advances) >= 4


def test_nothing_installed_means_silent() -> None:
    assert isinstance(current(), Silent)
    recorded = Recorded()
    with showing(recorded):
        assert current() is recorded
    assert isinstance(current(), Silent)  # the command's Progress does not outlive it


def test_lock_and_lock_check_report_json(project: Path) -> None:
    lockfile = project / "mlenv.lock"
    first = run_cli("lock", str(project), "--format", "json", env=offline_env())
    assert first.code == 0, first.stderr
    shown = json.loads(first.stdout)
    assert shown == {
        "lockfile": str(lockfile),
        "written": True,
        "lock-digest": lock_digest(lockfile.read_bytes()),
    }
    again = run_cli("lock", str(project), "-f", "json", env=offline_env())
    assert json.loads(again.stdout)["written"] is False

    fresh = run_cli("lock", "--check", str(project), "--format", "json")
    assert fresh.code == 0, fresh.stderr
    assert json.loads(fresh.stdout) == {"ok": True, "lockfile": str(lockfile), "stale": []}

    (project / "mlenv.toml").write_text(SPEC.replace('name = "progress"', 'name = "renamed"'))
    stale = run_cli("lock", "--check", str(project), "--format", "json")
    assert stale.code == 1
    verdict = json.loads(stale.stdout)  # stdout is the JSON alone; the reasons for people are on stderr
    assert verdict["ok"] is False and verdict["stale"] and verdict["lockfile"] == str(lockfile)
    assert f"{lockfile} is stale" in stale.stderr


def test_an_unknown_format_is_refused_before_any_work(project: Path) -> None:
    refused = run_cli("lock", str(project), "--format", "xml", env=offline_env())
    assert refused.code == 2
    assert refused.stderr == "mlenv: error: --format: unknown format 'xml'; choose one of text, json\n"
    assert not (project / "mlenv.lock").exists()


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_build_reports_json(fraud_image: Built, docker_daemon: Daemon) -> None:
    result = run_cli("build", str(fraud_image.project), "--tag", fraud_image.tag, "--format", "json")
    assert result.code == 0, result.stderr[-2000:]
    shown = json.loads(result.stdout)  # stdout is the JSON alone: the build's lines are on stderr
    image_id = docker_daemon.client.images.get(fraud_image.tag).id
    assert shown == {"tag": fraud_image.tag, "image-id": image_id, "verified": True, "reproducible": None}
