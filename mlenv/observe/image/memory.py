"""A memory of layers read before, as the loaders use it: a blob is recognised by its name and the
sha256 of its bytes, and then hashed but not parsed (verify.layermemo keeps what was read)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import Interest, LayerIndex, hash_only, index_layer
from mlenv.observe.stream.decompress import Chunk, StreamError


class LayerMemory(Protocol):
    """Layers read before (verify.layermemo): a blob named `name` (a save member, a blob digest) whose
    bytes hash to the first value is the layer of the second, recalled without parsing it."""

    def recall(self, name: str) -> tuple[str, LayerIndex] | None: ...


def read_layer(
    where: object, name: str, chunks: Iterable[Chunk], interest: Interest | None, memory: LayerMemory | None
) -> LayerIndex:
    """One layer blob, indexed, or recalled from `memory` once its bytes are proven the same: they are
    hashed in any case (a stream cannot be left unread), but not parsed."""
    recalled = memory.recall(name) if memory is not None else None
    if recalled is None:
        try:
            return index_layer(chunks, interest=interest, raw_digest=memory is not None)
        except StreamError as error:  # a malformed layer: one line naming the image, the layer and the member
            raise ImageError(f"{where}: layer {name}: {error}") from None
    raw, index = recalled
    found = hash_only(chunks)
    if found != raw:
        # The bytes went by unparsed, so the layer cannot be read now; never served as the remembered one.
        raise ImageError(
            f"{where}: layer {name} is not the layer remembered under that name (its bytes are {found}, "
            f"remembered {raw}); verify again"
        )
    return index
