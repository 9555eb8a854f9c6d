"""Where an image comes from, in skopeo's words: docker-daemon:NAME, docker-archive:PATH[:REF],
oci:PATH[:TAG], docker://REF; a bare name means the daemon."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from mlenv.errors import ImageError

Transport = Literal["docker-daemon", "docker-archive", "oci", "docker"]


@dataclass(frozen=True, kw_only=True)
class ImageLocation:
    transport: Transport
    target: str  # daemon image name, archive or layout path, or registry reference
    selector: str | None = None  # oci: tag; docker-archive: image reference inside the archive

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.target}"
        tail = f":{self.selector}" if self.selector else ""
        return f"{self.transport}:{self.target}{tail}"


def parse_location(text: str) -> ImageLocation:
    """Split a reference into transport and target. For paths with a ':' suffix, the suffix is a
    selector only when the whole text is not itself an existing path."""
    if not text.strip():
        raise ImageError("empty image reference")
    if text.startswith("docker://"):
        return ImageLocation(transport="docker", target=text[len("docker://") :])
    for transport in ("docker-daemon", "docker-archive", "oci"):
        prefix = transport + ":"
        if not text.startswith(prefix):
            continue
        rest = text[len(prefix) :]
        if not rest:
            raise ImageError(f"{text}: nothing after '{prefix}'")
        if transport == "docker-daemon":
            return ImageLocation(transport="docker-daemon", target=rest)
        path, selector = rest, None
        if not os.path.exists(rest) and ":" in rest:
            # The path is the shortest prefix before a ':' that exists; if none exists (an error
            # to report later), the selector starts at the first ':' of the last path component.
            cuts = [i for i, char in enumerate(rest) if char == ":"]
            existing = [i for i in cuts if os.path.exists(rest[:i])]
            slash = rest.rfind("/")
            cut = existing[0] if existing else next((i for i in cuts if i > slash), None)
            if cut is not None:
                path, selector = rest[:cut], rest[cut + 1 :] or None
        return ImageLocation(transport=transport, target=path, selector=selector)
    scheme, sep, _ = text.partition("://")
    if sep and "/" not in scheme:
        # A daemon image name holds no "://": this is a transport mlenv does not read.
        raise ImageError(
            f"{text}: unknown transport '{scheme}://' "
            "(use docker-daemon:NAME, docker-archive:PATH, oci:PATH or docker://REF)"
        )
    return ImageLocation(transport="docker-daemon", target=text)
