"""Core metadata of locked wheels without downloading them: PEP 658 `<wheel url>.metadata` files.

PyPI serves one for every wheel (PEP 714), a few KB where the wheel may be gigabytes (torch). Only
Requires-Dist is read: what a wheel pins of its dependencies (torch pins nvidia-cudnn-cu12==8.9.2.26).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser

import requests

from mlenv.errors import SourceError
from mlenv.model.urls import redact

TIMEOUT = (10, 60)
WORKERS = 8


def parse_requires_dist(metadata: bytes) -> tuple[str, ...]:
    """The Requires-Dist lines of a METADATA document, in order."""
    message = BytesParser().parsebytes(metadata, headersonly=True)
    return tuple(str(value) for value in message.get_all("Requires-Dist") or ())


class WheelMetadata:
    """Fetches Requires-Dist of wheels by URL over one keep-alive session, a few at a time."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self._session = session or requests.Session()

    def requires_dist(self, wheel_url: str) -> tuple[str, ...] | None:
        """Requires-Dist of the wheel at `wheel_url`; None when its index serves no metadata file."""
        url = wheel_url.split("#", 1)[0] + ".metadata"
        try:
            response = self._session.get(url, timeout=TIMEOUT)
        except requests.RequestException as error:
            problem = error.__class__.__name__
            raise SourceError(f"cannot read wheel metadata {redact(url)}: {problem}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SourceError(f"cannot read wheel metadata {redact(url)}: HTTP {response.status_code}")
        return parse_requires_dist(response.content)

    def many(self, wheel_urls: Iterable[str]) -> dict[str, tuple[str, ...] | None]:
        urls = sorted(set(wheel_urls))
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return dict(zip(urls, pool.map(self.requires_dist, urls), strict=True))
