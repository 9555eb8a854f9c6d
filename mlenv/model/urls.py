"""URL helpers shared by everything that records or prints a URL: credentials never reach an artifact."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://userinfo@ inside any text (an error line, a reference): what redact_text removes.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact(url: str) -> str:
    """`https://user:secret@host/simple` -> `https://host/simple` (what a lock or an export may show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if "@" not in parts.netloc:
        return url
    # The host as written (brackets of an IPv6 literal and the port kept), without the userinfo.
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` with the userinfo of every URL in it removed: for error lines and logs."""
    return _USERINFO.sub(r"\g<scheme>", text)
