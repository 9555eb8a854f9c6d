"""Plain HTTP downloads of locked artifacts (wheels, .debs, models), streamed in chunks.

Also the two things every HTTP client in mlenv shares: how long to wait, and how a failure is told.
requests is imported when something is fetched, not with this module (the registry client's module
is imported by the observer, which may never go on the network).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mlenv.errors import SourceError
from mlenv.model.urls import redact
from mlenv.progress import current

if TYPE_CHECKING:
    import requests

CHUNK = 1 << 20
TIMEOUT = (15, 120)
# Seconds; caps the connect and read timeouts of every client. A slow mirror or CI can raise nothing
# here (the defaults stay the ceiling), but a test can make a stalled server fail in seconds.
TIMEOUT_ENV = "MLENV_HTTP_TIMEOUT"


def timeouts(default: tuple[float, float]) -> tuple[float, float]:
    """(connect, read) seconds: `default`, each capped by MLENV_HTTP_TIMEOUT when that is a number > 0."""
    try:
        cap = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return default
    if not cap > 0:
        return default
    return (min(default[0], cap), min(default[1], cap))


def describe_failure(error: Exception) -> str:
    """What went wrong on the wire, in words; never the URL (it may hold a token or userinfo)."""
    import requests

    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.TooManyRedirects):
        return "too many redirects"
    if isinstance(error, requests.exceptions.InvalidSchema | requests.exceptions.InvalidURL):
        return "redirected to a URL it cannot fetch"
    if isinstance(error, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return "the answer broke off or is not what its headers say"
    if isinstance(error, requests.ConnectionError):
        return "connection failed"
    return error.__class__.__name__


def read_bounded(response: requests.Response, limit: int) -> bytes | None:
    """The body, or None when it runs over `limit` bytes (read no further than that)."""
    parts, size = [], 0
    for chunk in response.iter_content(CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def download_chunks(url: str, *, session: requests.Session | None = None) -> Iterator[bytes]:
    """The body of `url` in chunks; a clear SourceError when it cannot be had."""
    import requests

    http = session or requests.Session()
    try:
        with http.get(url, stream=True, timeout=timeouts(TIMEOUT)) as response:
            if response.status_code != 200:
                raise SourceError(f"cannot download {redact(url)}: HTTP {response.status_code}")
            length = response.headers.get("Content-Length", "")
            name = redact(url).rsplit("/", 1)[-1]
            with current().task(f"fetch {name}", int(length) if length.isdigit() else None) as task:
                for chunk in response.iter_content(CHUNK):
                    task.advance(len(chunk))
                    yield chunk
    except requests.RequestException as error:
        raise SourceError(f"cannot download {redact(url)}: {describe_failure(error)}") from None
