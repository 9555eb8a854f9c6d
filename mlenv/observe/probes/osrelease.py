"""/etc/os-release (or /usr/lib/os-release, its fallback per os-release(5)) → ID and VERSION_ID."""

from __future__ import annotations

import shlex

from mlenv.observe.fs.rootfs import ImageFS, NotKeptError

INTEREST = (r"/etc/os-release", r"/usr/lib/os-release", r"/etc/debian_version")
LOCATIONS = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting, comments and blank lines ignored (os-release(5))."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw, posix=True)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key.strip()] = words[0] if words else ""
    return values


def read_os_release(fs: ImageFS) -> dict[str, str]:
    for path in LOCATIONS:
        try:
            return parse_os_release(fs.read_text(path))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, NotKeptError, OSError):
            continue
    return {}
