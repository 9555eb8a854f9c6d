"""Zip-based model formats: skops (schema.json beside .npy files) and PyTorch's torch.save archives.

A zip is read through its central directory, so the stream must seek; a member is read only after
its declared sizes pass the limits (zipfile stops a member at its declared size, so a lying header
cannot make it inflate further). torch's data.pkl is a pickle and is walked like any other one:
its imports and the unsafe ones among them are what `torch.load(weights_only=False)` would run.
"""

from __future__ import annotations

import json
import zipfile
from typing import IO

from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.observe.models.facts import pickle_model_facts
from mlenv.observe.models.formats import ModelFormatError
from mlenv.observe.models.pickles import PickleFacts, walk_all
from mlenv.observe.models.unsafe import is_unsafe
from mlenv.observe.stream.decompress import ChunkReader, read_chunks

# Members of one archive: a skops file has one .npy per array, a torch checkpoint one file per storage.
MAX_MEMBERS = 200_000
# skops' schema.json holds the object tree without the arrays: a few MiB for the largest pipelines.
MAX_SCHEMA = 64 << 20
# A small text member (torch's version, byteorder).
MAX_SMALL = 4096
# Declared inflation of a member that is read (schema.json, *.pkl): text and pickles compress 5-20x;
# past the grace size a higher ratio is a bomb (deflate reaches ~1030x on repeated bytes).
MAX_MEMBER_RATIO = 200
RATIO_GRACE = 1 << 20


def read_zip(stream: IO[bytes]) -> ModelFacts:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise ModelFormatError(f"not a readable zip archive ({error})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ModelFormatError(f"a zip archive of {len(infos)} members (limit {MAX_MEMBERS})")
        names = {info.filename: info for info in infos}
        if "schema.json" in names:
            return _skops(archive, names["schema.json"])
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if pickles:
            return _torch(archive, pickles[0], names)
        return ModelFacts(format="unknown", note="a zip archive that is neither skops nor a torch archive")


def _check_ratio(info: zipfile.ZipInfo) -> None:
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_GRACE and ratio > MAX_MEMBER_RATIO:
        raise ModelFormatError(f"the zip member {info.filename[:200]!r} declares a {ratio:.0f}x inflation")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    _check_ratio(info)
    if info.file_size > limit:
        raise ModelFormatError(f"the zip member {info.filename[:200]!r} is over {limit} bytes")
    try:
        with archive.open(info) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as error:
        raise ModelFormatError(f"the zip member {info.filename[:200]!r} cannot be read ({error})") from None
    return data


def _skops(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> ModelFacts:
    data = _read_member(archive, info, MAX_SCHEMA)
    try:
        schema = json.loads(data)
    except (ValueError, RecursionError):
        raise ModelFormatError("skops' schema.json is not JSON (or nests too deep)") from None
    if not isinstance(schema, dict):
        raise ModelFormatError("skops' schema.json is not a JSON object")
    types: set[tuple[str, str]] = set()
    sklearn_versions: set[str] = set()
    _skops_walk(schema, types, sklearn_versions)
    skops_version = schema.get("_skops_version")
    producers = []
    if isinstance(skops_version, str):
        producers.append(Producer(library="skops", version=skops_version[:100]))
    else:
        producers.append(Producer(library="skops"))
    if any(module.split(".")[0] == "sklearn" for module, _ in types):
        if sklearn_versions:
            producers += [Producer(library="scikit-learn", version=v) for v in sorted(sklearn_versions)]
        else:
            producers.append(Producer(library="scikit-learn"))
    details = []
    if isinstance(schema.get("protocol"), int):
        details.append(("skops_protocol", str(schema["protocol"])))
    imports = tuple(sorted(f"{module}.{name}" for module, name in types))
    unsafe = tuple(sorted(f"{module}.{name}" for module, name in types if is_unsafe(module, name)))
    note = None
    if not isinstance(skops_version, str):
        note = "the skops schema records no _skops_version"
    return ModelFacts(
        format="skops",
        producers=tuple(sorted(producers, key=lambda p: (p.library, p.version or ""))),
        details=tuple(details),
        imports=imports,
        unsafe=unsafe,
        note=note,
    )


def _skops_walk(node: object, types: set[tuple[str, str]], versions: set[str]) -> None:
    # Iterative: a crafted schema nests as deep as json allows, deeper than a recursive walk may go.
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        module, cls = item.get("__module__"), item.get("__class__")
        if isinstance(module, str) and isinstance(cls, str):
            types.add((module[:300], cls[:300]))
        content = item.get("content")
        if isinstance(content, dict):
            version = content.get("_sklearn_version")
            if isinstance(version, dict) and isinstance(version.get("content"), str):
                text = version["content"]
                try:
                    decoded = json.loads(text) if version.get("is_json") else text
                except ValueError:
                    decoded = None
                if isinstance(decoded, str):
                    versions.add(decoded[:100])
        pending.extend(value for value in item.values() if isinstance(value, dict | list))


def _torch(archive: zipfile.ZipFile, data_pkl: str, names: dict[str, zipfile.ZipInfo]) -> ModelFacts:
    root = data_pkl.split("/")[0]
    facts = PickleFacts()
    # data.pkl holds the object tree; TorchScript archives add constants.pkl (and code/, run on load).
    for name in sorted(
        n for n in names if n.startswith(root + "/") and n.endswith(".pkl") and n.count("/") == 1
    ):
        _check_ratio(names[name])
        try:
            with archive.open(names[name]) as stream:
                walk_all(ChunkReader(read_chunks(stream)), facts, joblib=False)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as error:
            raise ModelFormatError(f"the zip member {name[:200]!r} cannot be read ({error})") from None
    details: list[tuple[str, str]] = []
    for key, member in (
        ("archive_version", f"{root}/version"),
        ("archive_version", f"{root}/.data/version"),
        ("byteorder", f"{root}/byteorder"),
    ):
        if member in names:
            text = _read_member(archive, names[member], MAX_SMALL).decode("utf-8", "replace").strip()
            details.append((key, text[:100]))
    if any(n.startswith(f"{root}/code/") for n in names):
        details.append(("torchscript", "true"))
    details.append(("storages", str(facts.persistent_ids)))
    base = pickle_model_facts(facts, "torch-zip", extra=tuple(details))
    producers = tuple(p for p in base.producers if p.library != "torch") + (Producer(library="torch"),)
    return ModelFacts(
        format="torch-zip",
        producers=tuple(sorted(producers, key=lambda p: (p.library, p.version or ""))),
        details=base.details,
        imports=base.imports,
        unsafe=base.unsafe,
        note="a torch archive records its serialization format version, not torch's",
    )
