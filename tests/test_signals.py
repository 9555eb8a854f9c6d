"""Signals: SIGINT says `mlenv: interrupted` (exit 130), SIGTERM `mlenv: terminated` (exit 143), each one
line, and neither leaves the resolver's temporary directory (or the resolver) behind. Real signals, sent
to a real `mlenv lock` while uv waits on an index that accepts connections and never answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlenv.files import work_directory


@pytest.fixture
def silent_index() -> Iterator[str]:
    """An index URL on loopback whose server accepts and then says nothing, so uv waits until stopped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    finally:
        server.close()


def leftovers(temp: Path) -> list[str]:
    return sorted(p.name for p in temp.iterdir() if p.name.startswith("mlenv-"))


@pytest.mark.parametrize(
    ("signum", "code", "line", "group"),
    [
        (signal.SIGINT, 130, "interrupted", False),
        (signal.SIGINT, 130, "interrupted", True),  # Ctrl-C in a terminal: uv gets it too
        (signal.SIGTERM, 143, "terminated", False),
    ],
)
def test_a_signal_during_lock_cleans_up(
    tmp_path: Path, silent_index: str, signum: int, code: int, line: str, group: bool
) -> None:
    project, temp = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    temp.mkdir()
    (project / "mlenv.toml").write_text(
        'name = "demo"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
        f'[python]\nrequirements = ["pandas==2.0.3"]\nindex-url = "{silent_index}"\n'
    )
    env = {**os.environ, "TMPDIR": str(temp), "UV_HTTP_TIMEOUT": "300"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlenv", "lock", str(project)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not leftovers(temp) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert leftovers(temp), "uv's work directory never appeared"
    time.sleep(0.5)  # let uv itself start and block on the index
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == code and stderr == f"mlenv: {line}\n" and stdout == ""
    assert leftovers(temp) == [] and not (project / "mlenv.lock").exists()
    assert running_in(temp) == []  # subprocess.run killed uv on the way out


def running_in(temp: Path) -> list[str]:
    """Command lines of live processes that name `temp` (uv's arguments hold its work directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not a process
            continue
        if str(temp) in cmdline:
            found.append(cmdline)
    return found


def test_work_directories_of_killed_runs_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = tmp_path / f"mlenv-uv-{dead.stdout.strip()}-abc"
    orphan.mkdir()
    (orphan / "requirements.in").write_text("pandas\n")
    alive = tmp_path / f"mlenv-uv-{os.getppid()}-def"  # a run still going (pytest's parent): kept
    alive.mkdir()
    with work_directory("uv") as work:
        assert work.parent == tmp_path and work.name.startswith(f"mlenv-uv-{os.getpid()}-")
        assert not orphan.exists() and alive.exists()
    assert not work.exists()
