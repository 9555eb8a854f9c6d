"""Layers already read for a lock, remembered by diff_id and the lock's sha256, so a verify after a
rebuild parses only the layers that changed (the others are hashed as they stream past, not parsed).

What is remembered of a layer is what its parse gave the verdict: its own entries (path, kind, mode,
owner, size, sha256, link), whiteouts and opaque markers - the accounting across layers (shadowing,
whiteouts, missing files) is done again from them - and the content the checks and probes read.
Content is left out only where it cannot be read: a .pyc whose sha256 is the one the lock's wheels
predict is accepted on its hash before its content is looked at (verify.accounting). The rest of the
verdict is computed again from these facts, the same way as after a fresh read, so a remembered
layer and a fresh read give the same report; the key holds the lock's sha256, mlenv's version and
this interpreter's (which compiles the .pyc the checks compare), so a changed lock is not served.

A blob is recognised by where it was read (a save member's name, a blob's digest), proven by the
sha256 of its bytes: `docker save` of dockerd 20.10 names layers by their v1 ids, known before the
bytes, but not their diff_ids (the manifest comes last, after every layer), so each name is
remembered with its bytes' sha256 and the diff_id they were read as. Entries are files under the
user cache dir, next to the content store, each written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from mlenv import __version__
from mlenv.files import atomic_writer
from mlenv.observe.fs.rootfs import LayerIndex, dump_index, load_index
from mlenv.observe.image import LoadedImage
from mlenv.sources.cas import cache_root

MEMO_VERSION = 2  # bumped whenever what a remembered layer holds changes (or which contents verify keeps)
# The fraud image's venv layer is 45 MB remembered (the byte code that this host compiles differently
# is kept to be checked); past this many bytes the least recently used layers are forgotten.
LIMIT = 2 << 30


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps([MEMO_VERSION, *parts]).encode()).hexdigest()


class LayerMemo:
    """Layers remembered under `root` (default: <cache>/derived/layers). `recalled` lists the diff_ids
    served from memory by the last `for_lock` view; `remembered` those written by `remember`."""

    def __init__(self, root: Path | None = None, *, limit: int = LIMIT) -> None:
        self.root = root if root is not None else cache_root() / "derived" / "layers"
        self.limit = limit
        self.recalled: list[str] = []
        self.remembered: list[str] = []

    def _layer(self, lock_digest: str, diff_id: str) -> Path:
        key = _digest(__version__, sys.version, lock_digest, diff_id)
        return self.root / "layers" / f"{key}.json"

    def _name(self, name: str) -> Path:
        return self.root / "names" / f"{_digest(name)}.json"

    def for_lock(self, lock_digest: str) -> LockedMemo:
        self.recalled = []
        return LockedMemo(self, lock_digest)

    def _load(self, lock_digest: str, diff_id: str) -> LayerIndex | None:
        path = self._layer(lock_digest, diff_id)
        try:
            index = load_index(path.read_bytes())
            os.utime(path)  # recently used: forgotten last
            return index
        except (OSError, ValueError):
            return None  # not remembered for this lock (or unreadable): the layer is read

    def recall(
        self, lock_digest: str, name: str, loaded: Callable[[str], LayerIndex | None] | None = None
    ) -> tuple[str, LayerIndex] | None:
        """The layer remembered under `name` for this lock, as (its bytes' sha256, its index)."""
        try:
            hint = json.loads(self._name(name).read_text(encoding="utf-8"))
            raw, diff_id = str(hint["raw"]), str(hint["diff_id"])
            if hint["name"] != name:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        index = loaded(diff_id) if loaded is not None else self._load(lock_digest, diff_id)
        if index is None:
            return None
        if index.diff_id != diff_id or index.raw_digest != raw:
            return None
        self.recalled.append(diff_id)
        return raw, index

    def remember(
        self, lock_digest: str, image: LoadedImage, keep_content: Callable[[str, str | None], bool]
    ) -> None:
        """Write each layer of `image` that was parsed (not recalled) in this read."""
        self.remembered = []
        recalled = set(self.recalled)
        for name, index in zip(image.layer_names, image.indexes, strict=True):
            if index.raw_digest is None or index.diff_id in recalled:
                continue  # not read with a memory (no sha256 of its bytes), or served from it
            target = self._layer(lock_digest, index.diff_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(target, durable=False) as out:
                out.write(dump_index(index, keep_content))
            hint = self._name(name)
            hint.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(hint, durable=False) as out:
                row = {"name": name, "raw": index.raw_digest, "diff_id": index.diff_id}
                out.write(json.dumps(row).encode())
            self.remembered.append(index.diff_id)
        if self.remembered:
            self._forget_beyond_limit()

    def _forget_beyond_limit(self) -> None:
        try:
            files = [(f.stat().st_mtime, f.stat().st_size, f) for f in (self.root / "layers").iterdir()]
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda row: row[0]):
            if total <= self.limit:
                break
            path.unlink(missing_ok=True)  # its name hints stay: without the layer they serve nothing
            total -= size


class LockedMemo:
    """A LayerMemo seen through one lock: the LayerMemory the loaders consult."""

    def __init__(self, memo: LayerMemo, lock_digest: str) -> None:
        self.memo = memo
        self.lock_digest = lock_digest
        self._early: dict[str, LayerIndex | None] = {}
        self._loader: threading.Thread | None = None

    def prefetch(self, diff_ids: Sequence[str]) -> None:
        """Load the layers remembered under these diff_ids in a worker thread, while the engine
        prepares its save (the engine's own list: a recalled layer is still proven by its bytes)."""

        def load() -> None:
            for diff_id in diff_ids:
                self._early[diff_id] = self.memo._load(self.lock_digest, diff_id)

        self._loader = threading.Thread(target=load, name="mlenv-memo", daemon=True)
        self._loader.start()

    def _loaded(self, diff_id: str) -> LayerIndex | None:
        if self._loader is not None:
            self._loader.join()
        if diff_id in self._early:
            return self._early.pop(diff_id)
        return self.memo._load(self.lock_digest, diff_id)

    def recall(self, name: str) -> tuple[str, LayerIndex] | None:
        return self.memo.recall(self.lock_digest, name, self._loaded)

    def known(self, diff_id: str) -> LayerIndex | None:
        """The layer remembered under this diff_id for this lock, unread (verify_local: the build's own
        check of layers the engine holds by that content address); counted as recalled."""
        index = self._loaded(diff_id)
        if index is not None and index.diff_id == diff_id:
            self.memo.recalled.append(diff_id)
            return index
        return None
