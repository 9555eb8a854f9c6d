"""Outputs: a regular file is replaced atomically; a symlink is written through and a device or FIFO
written into, never replaced by a regular file; `-o -` is stdout; a path that cannot be written is one
error line, and no temporary file is left beside it."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mlenv.errors import MlenvError
from mlenv.files import atomic_writer, write_atomic
from tests.helpers import run_cli

GOLDEN_LOCK = Path(__file__).parent / "fixtures" / "golden" / "mlenv.lock"


def export_args(*extra: str) -> list[str]:
    return ["export", "--format", "cyclonedx", "--lock", str(GOLDEN_LOCK), *extra]


def test_a_regular_file_is_replaced_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    path.chmod(0o600)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    real = tmp_path / "shared" / "sbom.json"
    real.write_bytes(b"old")
    link = tmp_path / "sbom.json"
    link.symlink_to(real)
    write_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new" and sorted(os.listdir(tmp_path / "shared")) == ["sbom.json"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "shared" / "new.json")
    write_atomic(dangling, b"created")
    assert dangling.is_symlink() and (tmp_path / "shared" / "new.json").read_bytes() == b"created"


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and os.listdir(tmp_path) == ["pipe"]


def test_dev_null_stays_a_device() -> None:
    write_atomic(Path("/dev/null"), b"discarded")
    assert stat.S_ISCHR(Path("/dev/null").lstat().st_mode)


def test_dev_full_is_an_error_and_stays_a_device() -> None:
    with pytest.raises(MlenvError, match=r"^/dev/full: cannot write: No space left on device$"):
        write_atomic(Path("/dev/full"), b"x" * 100_000)
    result = run_cli(*export_args("-o", "/dev/full"))
    assert (
        result.code == 2
        and result.stderr == "mlenv: error: /dev/full: cannot write: No space left on device\n"
    )
    assert stat.S_ISCHR(Path("/dev/full").lstat().st_mode)


def test_dash_is_stdout() -> None:
    plain = run_cli(*export_args())
    dashed = run_cli(*export_args("-o", "-"))
    assert plain.code == dashed.code == 0 and dashed.stdout == plain.stdout and plain.stdout.startswith("{")
    # /dev/stdout on a pipe is a link to /proc/self/fd/1, which resolves to no path: written by its name.
    linked = run_cli(*export_args("-o", "/dev/stdout"))
    assert linked.code == 0 and linked.stdout == plain.stdout and Path("/dev/stdout").is_symlink()
    assert not Path("-").exists()


def test_an_unwritable_directory_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = run_cli(*export_args("-o", str(tmp_path / "file" / "sbom.json")))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mlenv: error: {tmp_path / 'file' / 'sbom.json'}: cannot write: ")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere; the case above covers it
        return
    result = run_cli(*export_args("-o", str(locked / "sbom.json")))
    assert result.code == 2 and "cannot write: Permission denied" in result.stderr
    assert os.listdir(locked) == []


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "cache.bin"
    path.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_writer(path) as out:
        out.write(b"half")
        raise ValueError("hash mismatch")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["cache.bin"]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MlenvError, match="cannot write: Is a directory"):
        write_atomic(tmp_path, b"x")
    result = run_cli(*export_args("-o", str(tmp_path)))
    assert result.code == 2 and "--output" in result.stderr and "is a directory" in result.stderr
