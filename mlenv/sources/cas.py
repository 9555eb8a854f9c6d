"""A content-addressed cache of downloaded files, shared between projects.

Files are named by their sha256 and checked on every read: a corrupted or tampered entry is dropped and
fetched again, never used. The artifacts (wheels, .debs) and the apt indexes each keep one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from mlenv.errors import BuildError
from mlenv.files import atomic_writer, file_sha256
from mlenv.model.urls import redact_text

# Entries keep the private mode they have always had (mkstemp's); the build hard-links them into its
# context, so a different mode here could reach what the engine sees.
ENTRY_MODE = 0o600


def cache_root() -> Path:
    """$MLENV_CACHE, else $XDG_CACHE_HOME/mlenv (~/.cache/mlenv)."""
    explicit = os.environ.get("MLENV_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "mlenv").expanduser()


class Fallback(Protocol):
    """Another store of files by sha256, read when the cache lacks one: the vault (build/vault.py)."""

    @property
    def name(self) -> str: ...  # as an error line names it: `vault dir:/srv/v`

    def chunks(self, sha256: str) -> Iterable[bytes] | None: ...  # None when it does not hold it


class ContentStore:
    """Files named by their sha256 under `root` (default: the artifact cache, <cache_root>/cas).

    `fallback` (the vault) is where a fetch looks after the URLs, or instead of them when `network` is
    False: a build from a vault passes only the store, and nothing else reaches the network."""

    def __init__(
        self, root: Path | None = None, *, fallback: Fallback | None = None, network: bool = True
    ) -> None:
        self.root = root or cache_root() / "cas"
        self.fallback = fallback
        self.network = network

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def get(self, sha256: str) -> Path | None:
        """The cached file with this sha256, verified now; None when absent or corrupt (then removed).

        A file the cache lacks and the fallback (the vault) holds is copied in, checked, and returned:
        every reader of the store (the build's fetch, verify's library check) sees the vault."""
        path = self.cached(sha256)
        if path is not None:
            return path
        if self.fallback is not None:
            chunks = self.fallback.chunks(sha256)
            if chunks is not None:
                return self.put_stream(sha256, chunks, what=f"sha256:{sha256} from {self.fallback.name}")
        return None

    def cached(self, sha256: str) -> Path | None:
        """The cache alone (no fallback): the file verified now, None when absent or corrupt (removed)."""
        path = self.path_for(sha256)
        if not path.is_file():
            return None
        if file_sha256(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        return path

    def get_bytes(self, sha256: str) -> bytes | None:
        """The content of a (small) entry, read once and verified; None when absent or corrupt."""
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            path.unlink(missing_ok=True)
            return None
        return data

    def put_stream(self, sha256: str, chunks: Iterable[bytes], *, what: str) -> Path:
        """Store a download, checking its sha256 before it becomes visible in the cache."""
        target = self.path_for(sha256)
        digest = hashlib.sha256()
        # Not flushed to disk: every read checks the hash, so a torn entry is fetched again.
        with atomic_writer(target, mode=ENTRY_MODE, durable=False) as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != sha256:
                raise BuildError(
                    f"{what}: sha256 is {digest.hexdigest()}, the lock says {sha256}",
                    hint="the file changed upstream or in transit; it was not used",
                )
        return target

    def fetch(self, sha256: str, download: Callable[[], Iterable[bytes]], *, what: str) -> Path:
        return self.get(sha256) or self.put_stream(sha256, download(), what=what)

    def fetch_first(self, sha256: str, urls: Sequence[str], *, what: str, filename: str) -> Path:
        """The file with `sha256` from the first place that has it: this cache, each URL in order (none
        when the store's network is off), then the fallback (the vault). Whatever the place, the bytes
        are checked against `sha256` before use, and a mismatch is an error at once, never retried
        silently elsewhere. When every place fails, one line names `what` (the pin: `curl 7.88.1-10
        (curl_7.88.1-10_amd64.deb)`) and each place with its failure."""
        from mlenv.sources.http import download_chunks  # requests is loaded only when something is fetched

        found = self.cached(sha256)
        if found is not None:
            return found
        tried = [f"not in the cache ({self.root})"]
        for url in urls if self.network else ():
            try:
                return self.put_stream(sha256, download_chunks(url), what=filename)
            except BuildError:
                raise  # a hash mismatch
            except Exception as error:  # the next place decides; each failure is named in the end
                # The error may quote a URL: a mirror's credentials must not reach the error line.
                tried.append(redact_text(str(error)).removeprefix("cannot download "))
        if self.fallback is not None:
            try:
                chunks = self.fallback.chunks(sha256)
                if chunks is not None:
                    return self.put_stream(sha256, chunks, what=f"{filename} from {self.fallback.name}")
                tried.append(f"{self.fallback.name}: absent")
            except BuildError:
                raise
            except Exception as error:
                tried.append(f"{self.fallback.name}: {redact_text(str(error))}")
        raise BuildError(f"cannot fetch {what}: {'; '.join(tried)}")
