"""A PEP 691 (JSON simple API) index client: the files of one release, with hashes and sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import requests
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    canonicalize_version,
    parse_sdist_filename,
    parse_wheel_filename,
)

from mlenv.errors import SourceError

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT = (10, 60)


@dataclass(frozen=True, kw_only=True)
class IndexFile:
    filename: str
    url: str
    size: int | None
    sha256: str | None
    upload_time: datetime | None
    is_wheel: bool


def release_files(
    index_url: str, name: str, version: str, *, session: requests.Session | None = None
) -> list[IndexFile]:
    """Every file the index lists for `name==version` (yanked files included: a pin may name one)."""
    http = session or requests.Session()
    project_url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    try:
        response = http.get(project_url, headers={"Accept": SIMPLE_JSON}, timeout=TIMEOUT)
    except requests.RequestException as error:
        raise SourceError(f"cannot reach the index for {name}: {error.__class__.__name__}") from None
    if response.status_code == 404:
        return []
    if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith(SIMPLE_JSON):
        raise SourceError(
            f"{project_url}: the index answered {response.status_code} without the PEP 691 JSON API"
        )
    wanted = canonicalize_version(version)
    found = []
    for entry in response.json().get("files", []):
        filename = entry["filename"]
        try:
            if filename.endswith(".whl"):
                file_version = parse_wheel_filename(filename)[1]
                is_wheel = True
            else:
                file_version = parse_sdist_filename(filename)[1]
                is_wheel = False
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if canonicalize_version(file_version) != wanted:
            continue
        uploaded = entry.get("upload-time")
        found.append(
            IndexFile(
                filename=filename,
                url=requests.compat.urljoin(project_url, entry["url"]),
                size=entry.get("size"),
                sha256=entry.get("hashes", {}).get("sha256"),
                upload_time=datetime.fromisoformat(uploaded.replace("Z", "+00:00")) if uploaded else None,
                is_wheel=is_wheel,
            )
        )
    return found
