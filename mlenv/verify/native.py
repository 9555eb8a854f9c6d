"""Every shared library the locked wheels' ELF objects need (DT_NEEDED) is in the image: before the build,
from what the lock pins; on any image, from the image's own files.

Before the build (`refuse_unmet_libraries`, called by `mlenv build` before the engine is): the filesystem the
build will make is known without building it: the locked base's layers (read from its registry by the
manifest the lock pins, each checked against its locked diff_id, and remembered by diff_id so a second build
reads none), the locked .debs' data members, and the wheels' files under site-packages. The loader's search
(observe.loader) runs over that; a library found nowhere is refused in one line naming the wheel, the library
and a Debian package that ships it (sources.debian.contents).

On an image (`native_findings`, part of verify): the same search over the image's files, with the image's
LD_LIBRARY_PATH; each ELF object under the venv's site-packages is read from the locked wheel file with the
same sha256 (byte-identical, so the same DT_NEEDED), or from its own content where the image reader kept
it. A need found nowhere is a `missing-library` policy finding naming the object and the library.

What each wheel's ELF objects need is read once per wheel sha256 and cached.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import posixpath
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlenv.errors import BuildError, ImageError, SourceError
from mlenv.files import atomic_writer, json_cached
from mlenv.model.debian import deb_urls
from mlenv.model.lock import AptPin, AptSource, Lock, PythonFile
from mlenv.model.report import Finding, Report
from mlenv.observe import Observation
from mlenv.observe.elf import Dynamic, dynamic_of_bytes, dynamic_of_stream, is_shared_object_name
from mlenv.observe.fs.rootfs import (
    ImageFS,
    LayeredFS,
    LayerIndex,
    NotKeptError,
    dump_index,
    index_layer,
    load_index,
)
from mlenv.observe.loader import LD_SO_CONF, Unmet, default_dirs, is_extension_module, unmet_needs
from mlenv.render.dockerfile import base_reference
from mlenv.sources.cas import ContentStore, cache_root
from mlenv.sources.registry import ImageReference, RegistryClient
from mlenv.verify.config import base_config
from mlenv.verify.debfiles import read_deb
from mlenv.verify.expected import image_contents, venv_site

# Bumped whenever what is derived from a wheel or a base layer changes shape.
NATIVE_FORMAT = 2
# A member this small is read whole (once, for its hash and its headers); a bigger one (CUDA libraries reach
# 1 GiB) is read up to its dynamic segment, and its sha256 is the one the wheel's RECORD states (verify checks
# the RECORD against the wheel's bytes), so it is not inflated a second time.
WHOLE_MEMBER = 64 << 20
MAX_PYTHON_SOURCE = 8 << 20  # a .py file searched for the libraries it loads by name


@dataclass(frozen=True, kw_only=True)
class WheelObject:
    member: str  # the path inside the wheel
    sha256: str
    dynamic: Dynamic
    # Python code of the wheel names it (ctypes.CDLL of lightgbm's lib_lightgbm.so): a root of the search.
    python_loaded: bool = False


# --------------------------------------------------------------------------- wheels


def wheel_objects(sha256: str, fetch: Callable[[], Path]) -> list[WheelObject]:
    """The ELF shared objects of the wheel with this sha256, cached by it; `fetch` gives the wheel (checked
    against the sha256) when the cache has nothing."""
    return json_cached(
        cache_root() / "derived" / "native" / f"wheel-{NATIVE_FORMAT}-{sha256}.json",
        lambda rows: [
            WheelObject(
                member=str(r["member"]),
                sha256=str(r["sha256"]),
                dynamic=_dynamic_from(r["dynamic"]),
                python_loaded=bool(r["python_loaded"]),
            )
            for r in rows
        ],
        lambda: _read_wheel_objects(fetch()),
        lambda found: [dataclasses.asdict(o) for o in found],
    )


def _dynamic_from(row: dict[str, Any]) -> Dynamic:
    def paths(value: list[str] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(str(v) for v in value)

    return Dynamic(
        needed=tuple(str(n) for n in row["needed"]),
        soname=None if row["soname"] is None else str(row["soname"]),
        runpath=paths(row["runpath"]),
        rpath=paths(row["rpath"]),
        machine=int(row["machine"]),
        bits=int(row["bits"]),
    )


def _read_wheel_objects(path: Path) -> list[WheelObject]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise BuildError(f"{path.name}: not a readable wheel ({error})") from None
    found: list[WheelObject] = []
    with archive:
        try:
            record = _record_hashes(archive)
            for info in archive.infolist():
                if info.is_dir() or not is_shared_object_name(info.filename):
                    continue
                what = f"{path.name}: {info.filename}"
                if info.file_size <= WHOLE_MEMBER:
                    data = archive.read(info)
                    dynamic = dynamic_of_bytes(data, what=what)
                    digest = hashlib.sha256(data).hexdigest()
                else:
                    with archive.open(info) as handle:
                        dynamic = dynamic_of_stream(handle, info.file_size, what=what)
                    digest = record.get(info.filename) or _member_sha256(archive, info)
                if dynamic is not None:
                    found.append(WheelObject(member=info.filename, sha256=digest, dynamic=dynamic))
            named = _named_by_python(archive, [o.member for o in found])
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise BuildError(f"{path.name}: cannot be read ({error})") from None
    return [dataclasses.replace(o, python_loaded=o.member in named) for o in found]


def _record_hashes(archive: zipfile.ZipFile) -> dict[str, str]:
    """member -> sha256 hex, as the wheel's *.dist-info/RECORD states it."""
    names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
    if len(names) != 1:
        return {}
    hashes = {}
    text = archive.read(names[0]).decode("utf-8", "replace")
    for row in csv.reader(text.splitlines()):
        if len(row) >= 2 and row[1].startswith("sha256="):
            encoded = row[1][len("sha256=") :]
            try:
                hashes[row[0]] = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
            except ValueError:
                continue
    return hashes


def _named_by_python(archive: zipfile.ZipFile, members: list[str]) -> set[str]:
    """The libraries (not extension modules) whose file name without `.so...` appears in a .py file of the
    wheel: what its code loads with ctypes (`lib_lightgbm.so`, `"libtorch_global_deps" + ".so"`)."""
    stems = {m: posixpath.basename(m).split(".so", 1)[0] for m in members if not is_extension_module(m)}
    stems = {m: s for m, s in stems.items() if len(s) >= 4}
    named: set[str] = set()
    for info in archive.infolist():
        if len(named) == len(stems):
            break
        if not info.filename.endswith(".py") or info.file_size > MAX_PYTHON_SOURCE:
            continue
        text = archive.read(info).decode("utf-8", "replace")
        named |= {m for m, stem in stems.items() if m not in named and stem in text}
    return named


def _member_sha256(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    hasher = hashlib.sha256()
    with archive.open(info) as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def installed_path(member: str, site: str) -> str | None:
    """Where pip puts a wheel member: the root and `*.data/purelib|platlib` go to site-packages; the other
    `.data` schemes (scripts, headers, data) hold no library the loader looks up by name here."""
    first, _, rest = member.partition("/")
    if first.endswith(".data"):
        scheme, _, member = rest.partition("/")
        if scheme not in ("purelib", "platlib") or not member:
            return None
    path = posixpath.normpath(f"{site}/{member}")
    return path if path.startswith(site + "/") else None  # a member named ../x is not installed there


# --------------------------------------------------------------------------- the base's files


def _conf_interest(path: str) -> bool:
    return path == LD_SO_CONF or path.startswith(LD_SO_CONF + ".d/")


def base_files(lock: Lock, platform: str, *, registry: RegistryClient) -> LayeredFS:
    """The locked base's filesystem for `platform` (names, kinds, links; the ld.so.conf files' text), from
    its registry by the locked manifest digest, each layer checked against its locked diff_id."""
    assert lock.base is not None
    locked = next((p for p in lock.base.platforms if p.platform == platform), None)
    if locked is None:
        raise ImageError(f"the lock's base {lock.base.reference} has no {platform} image")
    root = cache_root() / "derived" / "native"
    indexes: list[LayerIndex | None] = []
    missing = []
    for diff_id in locked.diff_ids:
        try:
            indexes.append(load_index((root / f"layer-{NATIVE_FORMAT}-{diff_id[7:]}.idx").read_bytes()))
        except (OSError, ValueError):
            missing.append(diff_id)
            indexes.append(None)
    if missing:
        reference = ImageReference.parse(base_reference(lock.base))
        manifest = registry.get_manifest(reference, locked.manifest_digest)
        layers = manifest.data.get("layers")
        if not isinstance(layers, list) or len(layers) != len(locked.diff_ids):
            raise ImageError(
                f"the base manifest {locked.manifest_digest} of {lock.base.reference} does not list "
                f"{len(locked.diff_ids)} layers, as the lock does"
            )
        for position, (layer, diff_id) in enumerate(zip(layers, locked.diff_ids, strict=True)):
            if indexes[position] is not None:
                continue
            digest = layer.get("digest") if isinstance(layer, dict) else None
            if not isinstance(digest, str):
                raise ImageError(f"the base manifest {locked.manifest_digest} has a layer without a digest")
            index = index_layer(registry.blob_chunks(reference, digest), interest=_conf_interest)
            if index.diff_id != diff_id:
                raise ImageError(
                    f"layer {position + 1} of {lock.base.reference} is {index.diff_id}, "
                    f"the lock pins {diff_id}"
                )
            target = root / f"layer-{NATIVE_FORMAT}-{diff_id[7:]}.idx"
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(target, durable=False) as out:
                out.write(dump_index(index, lambda path, _sha256: _conf_interest(path)))
            indexes[position] = load_index(target.read_bytes())
    return LayeredFS(index for index in indexes if index is not None)


class _Overlay:
    """The build's filesystem before it exists: names added above the base (the .debs' members, the wheels'
    objects) over the base's LayeredFS. Symlinks resolve across both, as in the built image."""

    MAX_HOPS = 40

    def __init__(self, lower: ImageFS) -> None:
        self.lower = lower
        self.files: set[str] = set()
        self.links: dict[str, str] = {}

    def add(self, path: str, link: str | None = None) -> None:
        parent, _, name = path.rstrip("/").rpartition("/")
        where = self._resolve(parent or "/")
        if where is None or not name:
            return
        canonical = posixpath.join(where, name)
        if link is None:
            self.files.add(canonical)
        else:
            self.links[canonical] = link

    def _link(self, path: str) -> str | None:
        if path in self.links:
            return self.links[path]
        if path in self.files:
            return None
        try:
            return self.lower.readlink(path) if self.lower.is_symlink(path) else None
        except OSError:
            return None

    def _resolve(self, path: str) -> str | None:
        pending = [p for p in reversed(path.split("/")) if p and p != "."]
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if done:
                    done.pop()
                continue
            current = "/" + "/".join([*done, part])
            target = self._link(current)
            if target is None:
                done.append(part)
                continue
            hops += 1
            if hops > self.MAX_HOPS:
                return None
            if target.startswith("/"):
                done = []
            pending.extend(p for p in reversed(target.split("/")) if p and p != ".")
        return "/" + "/".join(done)

    def is_file(self, path: str) -> bool:
        found = self._resolve(path)
        return found is not None and (found in self.files or self.lower.is_file(found))

    def realpath(self, path: str) -> str:
        found = self._resolve(path)
        if found is None:
            raise FileNotFoundError(path)
        return found

    def read_text(self, path: str) -> str:
        return self.lower.read_text(path)

    def glob(self, pattern: str) -> list[str]:
        return self.lower.glob(pattern)


# --------------------------------------------------------------------------- before the build


@dataclass(frozen=True, kw_only=True)
class LockUnmet:
    wheel: str  # the wheel's file name
    package: str  # the pin's name and version, "lightgbm 4.3.0"
    member: str  # the object inside the wheel
    library: str


@dataclass(frozen=True, kw_only=True)
class BaseView:
    """What the search needs of the locked base: its files and its config's LD_LIBRARY_PATH."""

    files: ImageFS
    library_path: str | None


def base_view(lock: Lock, platform: str, *, store: ContentStore, registry: RegistryClient) -> BaseView:
    """The locked base's files and LD_LIBRARY_PATH (SourceError when its registry cannot be read)."""
    assert lock.base is not None
    files = base_files(lock, platform, registry=registry)
    config = base_config(lock, platform, store=store, registry=registry).get("config")
    env = config.get("Env") if isinstance(config, dict) else None
    library_path = None
    for line in env if isinstance(env, list) else []:
        if isinstance(line, str) and line.startswith("LD_LIBRARY_PATH="):
            library_path = line.partition("=")[2]
    return BaseView(files=files, library_path=library_path)


def lock_unmet(lock: Lock, platform: str, *, store: ContentStore, base: BaseView) -> list[LockUnmet]:
    """The needs of the locked wheels' ELF objects that an image built from `lock` would not provide."""
    contents = image_contents(lock, platform, lock_digest="")
    site = venv_site(lock)
    tree = _Overlay(base.files)
    for pin in (deb.pin for deb in contents.apt if deb.pin is not None):
        for path, link in deb_entries(pin, _deb_fetcher(store, pin, lock.apt.sources)):
            tree.add(path, link)
    objects: dict[str, Dynamic] = {}
    python_loaded: set[str] = set()
    owners: dict[str, tuple[str, str, str]] = {}
    for dist in contents.python:
        if dist.file is None or not dist.file.name.endswith(".whl"):
            continue
        for item in wheel_objects(dist.file.sha256, _wheel_fetcher(store, dist.file)):
            installed = installed_path(item.member, site)
            if installed is not None:
                tree.add(installed)
                objects[installed] = item.dynamic
                if item.python_loaded:
                    python_loaded.add(installed)
                owners[installed] = (dist.file.name, f"{dist.pin.name} {dist.pin.version}", item.member)
    # The app's Env comes after the base's in the image config: its value wins.
    library_path = dict(lock.app.env).get("LD_LIBRARY_PATH", base.library_path or "")
    unmet = unmet_needs(
        objects,
        tree,
        architecture=contents.architecture,
        library_path=library_path.split(":"),
        python_loaded=python_loaded,
    )
    return [
        LockUnmet(
            wheel=owners[u.path][0], package=owners[u.path][1], member=owners[u.path][2], library=u.library
        )
        for u in unmet
    ]


def deb_entries(pin: AptPin, fetch: Callable[[], Path]) -> list[tuple[str, str | None]]:
    """The files (link None) and symlinks (their targets) a locked .deb unpacks, cached by its sha256 (a warm
    build reads no .deb: reading the fraud image's eleven took 0.6 s)."""

    def derive() -> list[tuple[str, str | None]]:
        entries: list[tuple[str, str | None]] = []
        for member in read_deb(fetch()).members:
            if member.kind in ("file", "hardlink"):
                entries.append((member.path, None))
            elif member.kind == "symlink" and member.link is not None:
                entries.append((member.path, member.link))
        return entries

    return json_cached(
        cache_root() / "derived" / "native" / f"deb-{NATIVE_FORMAT}-{pin.sha256}.json",
        lambda rows: [(str(path), None if link is None else str(link)) for path, link in rows],
        derive,
        list,
    )


def _wheel_fetcher(store: ContentStore, file: PythonFile) -> Callable[[], Path]:
    return lambda: _fetch(store, file.sha256, [u for u in (file.url,) if u], file.name)


def _deb_fetcher(store: ContentStore, pin: AptPin, sources: tuple[AptSource, ...]) -> Callable[[], Path]:
    return lambda: _fetch_deb(store, pin, sources)


def _fetch_deb(store: ContentStore, pin: AptPin, sources: tuple[AptSource, ...]) -> Path:
    filename = pin.filename.rsplit("/", 1)[-1]
    return store.fetch_first(
        pin.sha256,
        deb_urls(sources, pin),
        what=f"{pin.name} {pin.version} ({filename})",
        filename=filename,
    )


def _fetch(store: ContentStore, sha256: str, urls: Sequence[str], what: str) -> Path:
    """From the cache, the URLs, then the store's vault: the bytes checked against `sha256` (cas)."""
    return store.fetch_first(sha256, urls, what=what, filename=what)


def refuse_unmet_libraries(
    lock: Lock,
    *,
    platform: str | None = None,
    docker_config: str | None = None,
    store: ContentStore | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> None:
    """BuildError (one line) when a locked wheel needs a shared library the image would not have: the
    wheel, the object, the library and a Debian package that ships it, as the mirror's Contents index says."""
    if lock.base is None:
        return  # nothing pins what the image holds beneath the venv
    chosen = platform or lock.target.platforms[0]
    store = store or ContentStore()
    try:
        base = base_view(lock, chosen, store=store, registry=RegistryClient(docker_config))
    except SourceError as error:
        # The engine may hold the base while its registry is away (an air-gapped rebuild): say so, build on.
        progress(f"native libraries not checked: the base's files cannot be read ({error.message})")
        return
    unmet = lock_unmet(lock, chosen, store=store, base=base)
    if not unmet:
        return
    from mlenv.sources.debian.contents import who_ships

    contents = image_contents(lock, chosen, lock_digest="")
    shipped = who_ships(
        [u.library for u in unmet],
        lock.apt.sources,
        architecture=contents.architecture,
        directories=default_dirs(contents.architecture),
    )
    first = unmet[0]
    said = shipped[first.library]
    if said.packages:
        where = f"Debian's {' or '.join(said.packages)} ships it ({said.where})"
        hint = f'add "{said.packages[0]}" to [apt] packages in mlenv.toml and run `mlenv lock`'
    elif said.problem is not None:
        where = f"no Debian package for it could be looked up ({said.problem})"
        hint = "install the library in the image (an [apt] package), or lock a wheel that bundles it"
    else:
        where = f"no Debian package ships it where the loader looks ({said.where} lists none)"
        hint = "install the library in the image, or lock a wheel that bundles it"
    others = sorted({f"{u.package.split()[0]}: {u.library}" for u in unmet[1:]} - {_short(first)})
    more = f"; also {', '.join(others[:5])}{' and more' if len(others) > 5 else ''}" if others else ""
    raise BuildError(
        f"{first.package} ({first.wheel}): {first.member} needs {first.library}, which neither the base, "
        f"the locked apt packages nor the wheels provide; {where}{more}",
        hint=hint,
    )


def _short(item: LockUnmet) -> str:
    return f"{item.package.split()[0]}: {item.library}"


# --------------------------------------------------------------------------- on an image


def native_findings(lock: Lock, observed: Observation, *, platform: str) -> list[Finding]:
    """A `missing-library` finding for each need of an ELF object under the venv's site-packages that the
    image's loader would find nowhere (the image's files, its LD_LIBRARY_PATH)."""
    fs = observed.fs
    site = venv_site(lock)
    if not fs.is_dir(site):
        return []
    known = _locked_objects(lock, platform)
    where = observed.image.location if observed.image is not None else "the image"
    objects: dict[str, Dynamic] = {}
    python_loaded: set[str] = set()
    for info in fs.iter_files(site):
        if not is_shared_object_name(info.path):
            continue
        item = known.get(info.sha256 or fs.sha256(info.path))
        if item is not None:
            objects[info.path] = item.dynamic
            if item.python_loaded:
                python_loaded.add(info.path)
            continue
        try:
            dynamic = dynamic_of_bytes(fs.read_bytes(info.path), what=f"{where}: {info.path}")
        except NotKeptError:
            continue  # not a locked wheel's file (a files drift says so) and its bytes were not kept
        if dynamic is not None:
            # Not a locked wheel's: who loads it is unknown, so it counts as loaded.
            objects[info.path] = dynamic
            python_loaded.add(info.path)
    config = observed.facts.config
    env = dict(config.env) if config is not None else {}
    contents = image_contents(lock, platform, lock_digest="")
    unmet = unmet_needs(
        objects,
        fs,
        architecture=contents.architecture,
        library_path=env.get("LD_LIBRARY_PATH", "").split(":"),
        python_loaded=python_loaded,
    )
    return [_finding(item) for item in unmet]


def _finding(item: Unmet) -> Finding:
    loaded = "" if item.root == item.path else f", loaded through {item.root}"
    return Finding(
        rule="missing-library",
        subject=item.path,
        detail=f"needs {item.library}, which the loader finds nowhere in the image{loaded}",
    )


def _locked_objects(lock: Lock, platform: str) -> dict[str, WheelObject]:
    """sha256 -> every ELF object of the locked wheels (from the cache, or the wheels)."""
    store = ContentStore()
    known: dict[str, WheelObject] = {}
    for dist in image_contents(lock, platform, lock_digest="").python:
        if dist.file is None or not dist.file.name.endswith(".whl"):
            continue
        for item in wheel_objects(dist.file.sha256, _wheel_fetcher(store, dist.file)):
            known[item.sha256] = item
    return known


def with_native_findings(report: Report, lock: Lock, observed: Observation, *, platform: str) -> Report:
    return dataclasses.replace(
        report, findings=(*report.findings, *native_findings(lock, observed, platform=platform))
    )
