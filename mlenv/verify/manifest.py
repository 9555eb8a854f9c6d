"""What a file above the base must be, and why: the vocabulary of verify's file accounting (pure data).

Every path that a layer above the locked base holds must be explained by exactly one ExpectedFile, whose
`source` names what the lock pins that vouches for it (a wheel by sha256, a .deb by sha256, the project's
app tree, a model's sha256, or one of the few files mlenv's own Dockerfile steps generate). Values come
from those pinned artifacts, never from metadata inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FileKind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True, kw_only=True)
class ExpectedFile:
    path: str  # absolute, normalised ("/opt/venv/lib/python3.11/site-packages/pandas/__init__.py")
    kind: FileKind
    source: str  # what vouches for it: "wheel:pandas-2.0.3-...whl", "deb:curl_7.88.1-10+deb12u6_amd64.deb",
    #              "app:app/main.py", "model:/app/models/model.joblib", "step:useradd" ...
    sha256: str | None = None  # hex; None when the content is checked otherwise (see `check`) or not a file
    size: int | None = None
    mode: int | None = None  # permission bits, where the source states them
    uid: int | None = None
    gid: int | None = None
    link: str | None = None  # symlink / hard link target
    # How the content is judged when there is no fixed sha256: "bytes" (sha256 above), "pyc" (a checked-hash
    # .pyc of `pyc_source`), "generated" (content derived by `source`'s rule, checked by a named function).
    check: Literal["bytes", "pyc", "generated", "presence"] = "bytes"
    pyc_source: str | None = None  # for check == "pyc": the .py path whose hash the .pyc must carry


@dataclass(frozen=True, kw_only=True)
class FoundFile:
    """One path as a layer above the base holds it (after whiteouts of later layers are applied)."""

    path: str
    kind: str  # "file", "dir", "symlink", "hardlink", "char", "block", "fifo", "whiteout"
    layer: int  # index in the image's layers, bottom first
    size: int
    sha256: str | None
    mode: int
    uid: int
    gid: int
    link: str | None = None
