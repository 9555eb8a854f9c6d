"""The glibc version, read from libc itself: its banner ("... release version 2.36."), or the
pre-2.34 file name libc-2.31.so, with the libc6 package as the last resort. None for musl or
static images."""

from __future__ import annotations

import re

from mlenv.model.facts import AptFact
from mlenv.observe.fs.rootfs import ImageFS, NotKeptError
from mlenv.observe.probes.dpkg import upstream_version

INTEREST = (r"/(usr/)?lib(64|32)?/([^/]+/)?libc\.so\.6", r"/(usr/)?lib(64|32)?/([^/]+/)?libc-[0-9.]+\.so")
_DIRS = ("/usr/lib64", "/lib64", "/usr/lib/*", "/lib/*", "/usr/lib", "/lib")
_BANNER = re.compile(rb"GNU C Library [^\n\x00]*?release version (\d+\.\d+)")
_FILE_NAME = re.compile(r"libc-(\d+\.\d+)\.so$")
_PACKAGES = ("libc6", "libc6-amd64", "libc6-i386", "glibc")


def glibc_version(fs: ImageFS, apt: tuple[AptFact, ...] = ()) -> str | None:
    seen: set[str] = set()
    for directory in _DIRS:
        for path in fs.glob(f"{directory}/libc.so.6"):
            try:
                real = fs.realpath(path)
            except (OSError, FileNotFoundError):
                continue
            if real in seen or not fs.is_file(real):
                continue
            seen.add(real)
            named = _FILE_NAME.search(real)
            if named:
                return named.group(1)
            try:
                found = _BANNER.search(fs.read_bytes(real))
            except (OSError, NotKeptError):
                continue
            if found:
                return found.group(1).decode()
    for name in _PACKAGES:
        for fact in apt:
            if fact.name == name:
                return ".".join(upstream_version(fact.version).split(".")[:2])
    return None
