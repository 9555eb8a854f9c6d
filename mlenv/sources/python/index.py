"""A PEP 691 (JSON simple API) index client: the files of one release, with hashes and sizes.

The index is untrusted: an answer that is not the JSON API, too large, or of the wrong shape is one
SourceError naming the project and the index (its URL without userinfo)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
from mlenv.model.urls import redact
from mlenv.sources.http import describe_failure, read_bounded, timeouts

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT = (10, 60)
# PyPI's largest project pages (every release of a nightly-built package) are tens of MiB of JSON.
MAX_PROJECT_PAGE = 64 << 20


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
    shown = redact(project_url)
    try:
        with http.get(
            project_url, headers={"Accept": SIMPLE_JSON}, timeout=timeouts(TIMEOUT), stream=True
        ) as response:
            if response.status_code == 404:
                return []
            if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith(
                SIMPLE_JSON
            ):
                raise SourceError(
                    f"{shown}: the index answered {response.status_code} without the PEP 691 JSON API"
                )
            body = read_bounded(response, MAX_PROJECT_PAGE)
    except requests.RequestException as error:
        raise SourceError(f"cannot reach the index {shown} for {name}: {describe_failure(error)}") from None
    if body is None:
        raise SourceError(
            f"{shown}: the index answered over {MAX_PROJECT_PAGE >> 20} MiB for {name}; refused"
        )
    wanted = canonicalize_version(version)
    found = []
    for entry in _files(shown, body):
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
        found.append(
            IndexFile(
                filename=filename,
                url=requests.compat.urljoin(project_url, entry["url"]),
                size=entry.get("size"),
                sha256=entry.get("hashes", {}).get("sha256"),
                upload_time=_upload_time(shown, filename, entry.get("upload-time")),
                is_wheel=is_wheel,
            )
        )
    return found


def _files(shown: str, body: bytes) -> list[dict[str, Any]]:
    """The page's `files`, each checked for the fields read from it (PEP 691 types)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise SourceError(f"{shown}: the index answered a page that is not JSON") from None
    files = data.get("files", []) if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise SourceError(f"{shown}: the index answered a page without a list of files")
    for entry in files:
        good = (
            isinstance(entry, dict)
            and isinstance(entry.get("filename"), str)
            and isinstance(entry.get("url"), str)
            and (entry.get("size") is None or type(entry.get("size")) is int)
            and isinstance(entry.get("hashes", {}), dict)
            and isinstance(entry.get("hashes", {}).get("sha256", ""), str)
        )
        if not good:
            raise SourceError(f"{shown}: the index lists a file entry of the wrong shape")
    return files


def _upload_time(shown: str, filename: str, uploaded: object) -> datetime | None:
    if uploaded is None:
        return None
    try:
        if isinstance(uploaded, str):
            return datetime.fromisoformat(uploaded.replace("Z", "+00:00"))
    except ValueError:
        pass
    raise SourceError(f"{shown}: the index gives {filename} an upload-time that is not an ISO 8601 time")
