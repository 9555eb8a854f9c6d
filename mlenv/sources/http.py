"""Plain HTTP downloads of locked artifacts (wheels, .debs, models), streamed in chunks."""

from __future__ import annotations

from collections.abc import Iterator

import requests

from mlenv.errors import SourceError
from mlenv.model.urls import redact

CHUNK = 1 << 20
TIMEOUT = (15, 120)


def download_chunks(url: str, *, session: requests.Session | None = None) -> Iterator[bytes]:
    """The body of `url` in chunks; a clear SourceError when it cannot be had."""
    http = session or requests.Session()
    try:
        with http.get(url, stream=True, timeout=TIMEOUT) as response:
            if response.status_code != 200:
                raise SourceError(f"cannot download {redact(url)}: HTTP {response.status_code}")
            yield from response.iter_content(CHUNK)
    except requests.RequestException as error:
        raise SourceError(f"cannot download {redact(url)}: {error.__class__.__name__}") from None


def exists(url: str, *, session: requests.Session | None = None) -> bool:
    http = session or requests.Session()
    try:
        return http.head(url, timeout=TIMEOUT, allow_redirects=True).status_code == 200
    except requests.RequestException:
        return False
