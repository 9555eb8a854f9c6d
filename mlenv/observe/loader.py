"""Where glibc's dynamic loader finds each library that an ELF object of site-packages needs, worked out from
files alone (nothing is loaded or run).

The search follows ld.so(8) for an object O needing N:
  1. N with a slash is that path;
  2. a library already loaded (by SONAME or file name) is reused;
  3. unless O has DT_RUNPATH: O's DT_RPATH, then the DT_RPATH of each object up O's loader chain (auditwheel's
     `$ORIGIN/../numpy.libs` reaches numpy.libs/libgfortran through libopenblas this way);
  4. LD_LIBRARY_PATH (the image's Env); 5. O's DT_RUNPATH, for O's own needs only (torch's
     `$ORIGIN/../../nvidia/*/lib`);
  6. the directories of /etc/ld.so.conf (includes followed), which ldconfig caches, then the default ones.
The roots are the extension modules (what Python's importer dlopens) and the libraries that Python code
loads through ctypes (lightgbm's lib_lightgbm.so, torch's libtorch_global_deps.so), checked with everything
the extension modules load already in the process. A library that nothing in site-packages needs and no
Python code names is a plugin another library may dlopen (nvshmem's MPI and UCX transports, cuFile's RDMA):
optional, and not checked. The NVIDIA driver's libraries (libcuda.so.1, libnvidia-*.so) are not in images:
the container runtime mounts them from the host, so a need of one is met.
Libraries found outside site-packages (the base, apt) are not followed further: their own needs are
their packages' dependencies, which dpkg holds. The ELF class and machine of a candidate are not compared.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mlenv.observe.elf import Dynamic
from mlenv.observe.limits import text_lines

# Debian's triplets and $PLATFORM values by OCI architecture.
MULTIARCH = {
    "amd64": "x86_64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "386": "i386-linux-gnu",
    "arm": "arm-linux-gnueabihf",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
}
PLATFORM = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "ppc64le", "s390x": "s390x"}
LD_SO_CONF = "/etc/ld.so.conf"
# What the NVIDIA container toolkit mounts into a GPU container from the host's driver (its driver libraries).
DRIVER_LIBRARY = re.compile(r"lib(?:cuda|cudadebugger|nvcuvid|nvoptix|nvidia-[a-z0-9_-]+)\.so(?:\.[0-9.]+)?")
DRIVER = "<driver>"
MAX_INCLUDE_DEPTH = 8  # ld.so.conf includes nest one level in practice; a loop stops here
MAX_CONF_DIRS = 1024


class Lookup(Protocol):
    """What the search reads of a filesystem (an ImageFS has it; the build's view of base + apt + wheels)."""

    def is_file(self, path: str) -> bool: ...
    def realpath(self, path: str) -> str: ...
    def read_text(self, path: str) -> str: ...
    def glob(self, pattern: str) -> list[str]: ...


@dataclass(frozen=True, kw_only=True)
class Unmet:
    """`library`, which `path` needs, is found nowhere on the loader's path; `root` is what loads `path`
    (the extension module or library imported or dlopened), `path` itself when it is the root."""

    path: str
    library: str
    root: str


def default_dirs(architecture: str) -> tuple[str, ...]:
    """The loader's built-in directories (Debian's multiarch ones first), searched after ld.so.cache."""
    triplet = MULTIARCH.get(architecture)
    multi = (f"/lib/{triplet}", f"/usr/lib/{triplet}") if triplet else ()
    wide = ("/lib64", "/usr/lib64") if architecture in ("amd64", "arm64", "ppc64le", "s390x") else ()
    return (*multi, *wide, "/lib", "/usr/lib")


def conf_dirs(fs: Lookup) -> tuple[str, ...]:
    """The directories /etc/ld.so.conf names, its `include` globs followed (relative ones from /etc)."""
    found: list[str] = []

    def read(path: str, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH or len(found) > MAX_CONF_DIRS or not fs.is_file(path):
            return
        for line in text_lines(fs.read_text(path), path):
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("hwcap "):
                continue
            if line.startswith("include "):
                for pattern in line[len("include ") :].split():
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(path), pattern)
                    for included in sorted(fs.glob(pattern)):
                        read(included, depth + 1)
                continue
            for directory in line.replace(",", " ").split():
                if directory.startswith("/"):
                    found.append(directory.split("=", 1)[0].rstrip("/") or "/")

    read(LD_SO_CONF, 0)
    return tuple(dict.fromkeys(found))


def expand(entries: Iterable[str], origin: str, architecture: str) -> tuple[str, ...]:
    """RUNPATH/RPATH entries with $ORIGIN, $LIB and $PLATFORM substituted; relative ones (from the process's
    working directory, unknowable here) are dropped."""
    triplet = MULTIARCH.get(architecture)
    lib = f"lib/{triplet}" if triplet else "lib"
    out = []
    for entry in entries:
        for token, value in (
            ("ORIGIN", origin),
            ("LIB", lib),
            ("PLATFORM", PLATFORM.get(architecture, architecture)),
        ):
            entry = entry.replace("${" + token + "}", value).replace("$" + token, value)
        if entry.startswith("/"):
            out.append(posixpath.normpath(entry))
    return tuple(out)


def is_extension_module(path: str) -> bool:
    """A file Python's importer loads: `name.cpython-311-x86_64-linux-gnu.so`, `name.abi3.so`, `name.so`
    (not a versioned `libx.so.1`, which only a loader or ctypes opens)."""
    base = posixpath.basename(path)
    return base.endswith(".so") and not base.startswith("lib")


class _Search:
    def __init__(
        self,
        objects: Mapping[str, Dynamic],
        fs: Lookup,
        *,
        architecture: str,
        library_path: Sequence[str],
    ) -> None:
        self.objects = objects
        self.fs = fs
        self.architecture = architecture
        self.library_path = tuple(d for d in library_path if d.startswith("/"))
        self.system = tuple(dict.fromkeys((*conf_dirs(fs), *default_dirs(architecture))))
        self._found: dict[tuple[str, tuple[str, ...]], str | None] = {}

    def own_rpath(self, path: str) -> tuple[str, ...]:
        dynamic = self.objects[path]
        if dynamic.runpath is not None or not dynamic.rpath:
            return ()  # a DT_RUNPATH switches the object's DT_RPATH off
        return expand(dynamic.rpath, posixpath.dirname(path), self.architecture)

    def find(self, path: str, name: str, inherited: tuple[str, ...]) -> str | None:
        """Where `name`, needed by `path` (whose loader chain's RPATH directories are `inherited`), is."""
        dynamic = self.objects[path]
        if "/" in name:
            return self._locate(name) if name.startswith("/") else None
        if DRIVER_LIBRARY.fullmatch(name):
            return DRIVER
        dirs: list[str] = []
        if dynamic.runpath is None:
            dirs += self.own_rpath(path)
            dirs += inherited
        dirs += self.library_path
        if dynamic.runpath is not None:
            dirs += expand(dynamic.runpath, posixpath.dirname(path), self.architecture)
        dirs += self.system
        key = (name, tuple(dict.fromkeys(dirs)))
        if key not in self._found:
            self._found[key] = next(
                (hit for d in key[1] if (hit := self._locate(posixpath.join(d, name))) is not None), None
            )
        return self._found[key]

    def _locate(self, candidate: str) -> str | None:
        if candidate in self.objects:
            return candidate
        try:
            if not self.fs.is_file(candidate):
                return None
            return self.fs.realpath(candidate)
        except OSError:  # a symlink loop inside the image is a library the loader cannot open either
            return None

    def walk(self, root: str, preloaded: Mapping[str, str]) -> tuple[dict[str, str], list[Unmet]]:
        """Load `root` as the loader would (breadth first) with `preloaded` names already in the process;
        what got loaded (names -> paths) and each need that was found nowhere."""
        loaded = dict(preloaded)
        unmet: list[Unmet] = []
        self._note(loaded, root)
        queue: deque[tuple[str, tuple[str, ...]]] = deque([(root, ())])
        visited = {root}
        while queue:
            path, inherited = queue.popleft()
            passed_on = self.own_rpath(path) + inherited
            for name in self.objects[path].needed:
                if name in loaded:
                    continue
                hit = self.find(path, name, inherited)
                if hit is None:
                    unmet.append(Unmet(path=path, library=name, root=root))
                    loaded[name] = ""  # glibc fails the whole load here; one line per need is enough
                    continue
                loaded[name] = hit
                if hit in self.objects and hit not in visited:
                    visited.add(hit)
                    self._note(loaded, hit)
                    queue.append((hit, passed_on))
        return loaded, unmet

    def _note(self, loaded: dict[str, str], path: str) -> None:
        loaded.setdefault(posixpath.basename(path), path)
        soname = self.objects[path].soname
        if soname:
            loaded.setdefault(soname, path)


def unmet_needs(
    objects: Mapping[str, Dynamic],
    fs: Lookup,
    *,
    architecture: str,
    library_path: Sequence[str] = (),
    python_loaded: Collection[str] | None = None,
) -> list[Unmet]:
    """Every DT_NEEDED of the ELF objects `objects` (absolute path -> its dynamic part; the shared objects of
    site-packages) that the loader would find nowhere in `fs`, one per (object, library), sorted.
    `python_loaded`: the libraries Python code loads by name (ctypes); None counts every library nothing
    else needs as one."""
    search = _Search(objects, fs, architecture=architecture, library_path=library_path)
    needed_by_others: set[str] = set()
    for path in sorted(objects):
        for name in objects[path].needed:
            hit = search.find(path, name, ())
            if hit is not None and hit != path:
                needed_by_others.add(hit)
    found: dict[tuple[str, str], Unmet] = {}
    process: dict[str, str] = {}
    for root in (p for p in sorted(objects) if is_extension_module(p)):
        loaded, unmet = search.walk(root, {})
        process.update((k, v) for k, v in loaded.items() if v)
        for item in unmet:
            found.setdefault((item.path, item.library), item)
    reached = needed_by_others | set(process.values())
    roots = [p for p in sorted(objects) if p not in reached and not is_extension_module(p)]
    for root in (r for r in roots if python_loaded is None or r in python_loaded):
        _loaded, unmet = search.walk(root, process)
        for item in unmet:
            found.setdefault((item.path, item.library), item)
    return [found[key] for key in sorted(found)]
