"""Loaded by every `python -m mlenv` the corpus runs (its directory is on PYTHONPATH): records writes.

An audit hook sees each open for writing, rename, mkdir, remove, link, chmod and truncate the process
makes; one whose path lies outside the roots in MLENV_CORPUS_ALLOWED is appended to the file named
by MLENV_CORPUS_WRITES, which the test reads. Inert when that variable is unset. Child processes (uv,
docker) are not seen: the corpus's cases run none.
"""

from __future__ import annotations

import os
import sys

_LOG = os.environ.get("MLENV_CORPUS_WRITES")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Events whose first argument (and for rename/link/symlink the second) is a path being changed.
_CHANGES = {
    "os.rename": (0, 1),
    "os.link": (1,),
    "os.symlink": (1,),
    "os.mkdir": (0,),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.utime": (0,),
    "os.mkfifo": (0,),
    "os.mknod": (0,),
}
# Written through, never replaced (a replacement shows as os.rename onto the path, which is recorded).
_DEVICES = frozenset({"/dev/null", "/dev/full", "/dev/stdout", "/dev/stderr", "/dev/tty"})


def _install(log: str) -> None:
    allowed = tuple(os.path.realpath(root) for root in os.environ["MLENV_CORPUS_ALLOWED"].split(os.pathsep))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    busy = [False]

    def outside(path: object) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str) or path in _DEVICES:
            return None
        real = os.path.realpath(path)
        if real in _DEVICES or any(real == root or real.startswith(root + os.sep) for root in allowed):
            return None
        return real

    def hook(event: str, args: tuple[object, ...]) -> None:
        if busy[0]:
            return
        paths: tuple[object, ...] = ()
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, 0))[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            paths = (path,) if writes else ()
        elif event in _CHANGES:
            paths = tuple(args[i] for i in _CHANGES[event] if i < len(args))
        if not paths:
            return
        busy[0] = True
        try:
            for path in paths:
                real = outside(path)
                if real is not None:
                    os.write(fd, f"{event} {real}\n".encode(errors="replace"))
        finally:
            busy[0] = False

    sys.addaudithook(hook)


if _LOG:
    _install(_LOG)
