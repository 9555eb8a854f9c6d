"""/etc/os-release (or /usr/lib/os-release, its fallback per os-release(5)) → ID, VERSION_ID, ...

The one reader of the format: the observer takes ID and VERSION_ID from it, the apt resolver ID and
VERSION_CODENAME.
"""

from __future__ import annotations

from mlenv.observe.fs.rootfs import ImageFS, NotKeptError
from mlenv.observe.limits import text_lines

INTEREST = (r"/etc/os-release", r"/usr/lib/os-release", r"/etc/debian_version")
LOCATIONS = ("/etc/os-release", "/usr/lib/os-release")
# Inside double quotes a backslash escapes only these (as in the shell); before any other character it
# stays, with that character.
_DOUBLE_QUOTE_ESCAPES = '"\\`$'


def parse_os_release(text: str, what: str = "os-release") -> dict[str, str]:
    """KEY=value lines, comments (#) and blank lines skipped, values unquoted as os-release(5) says.

    Values follow shell quoting, as systemd reads them: '...' is literal, "..." unescapes \\" \\\\ \\` \\$,
    a backslash outside quotes escapes any character, quoted pieces join (`"a"'b'` is `ab`), and an
    unquoted value loses its trailing blanks. A later assignment of a key wins, as in the shell.
    """
    values: dict[str, str] = {}
    for line in text_lines(text, what):  # a line past the limit is refused, not parsed
        line = line.lstrip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        key = key.strip()
        if key:
            values[key] = _unquote(raw)
    return values


def _unquote(raw: str) -> str:
    out: list[str] = []
    keep = 0  # length of `out` up to its last character that trailing-blank stripping must keep
    quote: str | None = None
    chars = iter(raw.lstrip())
    for char in chars:
        if quote == "'":
            if char == "'":
                quote = None
            else:
                out.append(char)
        elif quote == '"':
            if char == '"':
                quote = None
            elif char == "\\":
                following = next(chars, "")
                out.append(following if following in _DOUBLE_QUOTE_ESCAPES else "\\" + following)
            else:
                out.append(char)
        elif char in "'\"":
            quote = char
        elif char == "\\":
            out.append(next(chars, ""))
        else:
            out.append(char)
            if not char.isspace():
                keep = len(out)
            continue
        keep = len(out)  # quoted or escaped characters are never stripped
    return "".join(out[:keep])


def read_os_release(fs: ImageFS) -> dict[str, str]:
    for path in LOCATIONS:
        try:
            return parse_os_release(fs.read_text(path), path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, NotKeptError, OSError):
            continue
    return {}
