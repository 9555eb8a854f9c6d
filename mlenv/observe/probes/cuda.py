"""The CUDA stack an image carries: NVIDIA's wheels in a site directory, the libraries' real file
names (libcudart.so.12.1.105), dpkg's entries for NVIDIA's packages, /usr/local/cuda*/version.json,
the /usr/local/cuda-X.Y directory, and the env NVIDIA's base images set.

One version per component. What the code will load wins: a wheel, then a library file, then the
package database, then the toolkit's version.json, then the image env (which only records what the
base image was built with), then the directory name. A lower source still refines a higher one when
it says the same version more precisely (libcudnn.so.8.9.0 and dpkg's 8.9.0.131 give 8.9.0.131).

Components: "cuda" is the toolkit release (12.1.1); "runtime" is libcudart's own version (12.1.105),
the one NVIDIA's wheels carry; then "cudnn", "cublas", "nccl", "nvjitlink".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mlenv.model.cuda import merge, wheel_component
from mlenv.model.facts import AptFact, CudaComponent, DistFact
from mlenv.observe.fs.rootfs import ImageFS, NotKeptError
from mlenv.observe.limits import load_json
from mlenv.observe.probes.dpkg import upstream_version

INTEREST = (
    r"/usr/local/cuda[^/]*/version\.(json|txt)",
    r"(/[^/]+)*/include/([^/]+/)?cudnn_version(_v[0-9]+)?\.h",
)

# Sorted by key and the first one set wins, so NVIDIA's NV_* spellings come after the short ones.
ENV = {
    "CUDA_VERSION": "cuda",
    "NV_CUDA_CUDART_VERSION": "runtime",
    "NV_CUDNN_VERSION": "cudnn",
    "CUDNN_VERSION": "cudnn",
    "NCCL_VERSION": "nccl",
    "NV_LIBNCCL_PACKAGE_VERSION": "nccl",
    "NV_LIBCUBLAS_VERSION": "cublas",
}
LIBRARIES = {
    "libcudart": "runtime",
    "libcudnn": "cudnn",
    "libcublas": "cublas",
    "libnccl": "nccl",
    "libnvJitLink": "nvjitlink",
}
VERSION_JSON = {"cuda": "cuda", "cuda_cudart": "runtime", "libcublas": "cublas", "libnvjitlink": "nvjitlink"}
# NVIDIA's apt repository names: cuda-cudart-12-1, libcudnn8 / libcudnn9-cuda-12, libcublas-12-1,
# libnccl2, libnvjitlink-12-1 (the -dev packages carry the same versions and are not needed).
DPKG = (
    (re.compile(r"cuda-cudart-\d+-\d+"), "runtime"),
    (re.compile(r"libcudnn\d+(-cuda-\d+)?"), "cudnn"),
    (re.compile(r"libcublas-\d+-\d+"), "cublas"),
    (re.compile(r"libnccl\d+"), "nccl"),
    (re.compile(r"libnvjitlink-\d+-\d+"), "nvjitlink"),
)
_LIBRARY = re.compile(r"^(lib[A-Za-z]+)\.so\.(\d+\.\d+(?:\.\d+)*)$")
_TOOLKIT_DIR = re.compile(r"^/usr/local/cuda-(\d+\.\d+)$")
LIB_DIRS = (
    "/usr/local/cuda*/lib64",
    "/usr/local/cuda*/targets/*/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
)


def _from_wheels(dists: Iterable[DistFact]) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for dist in sorted(dists, key=lambda d: (d.site, d.name)):
        component = wheel_component(dist.name)
        if component is not None and component not in found:
            found[component] = CudaComponent(
                name=component, version=dist.version, source=f"wheel:{dist.name}"
            )
    return found


def library_files(fs: ImageFS) -> list[tuple[str, str, str]]:
    """(component, version, path) of every versioned CUDA library file (not symlink) in the library dirs."""
    found = []
    for pattern in LIB_DIRS:
        for directory in fs.glob(pattern):
            if not fs.is_dir(directory):
                continue
            for name in fs.listdir(directory):
                match = _LIBRARY.match(name)
                if not match or match.group(1) not in LIBRARIES:
                    continue
                path = f"{directory}/{name}"
                if fs.is_symlink(path) or not fs.is_file(path):
                    continue
                found.append((LIBRARIES[match.group(1)], match.group(2), path))
    return found


def library_bytes(fs: ImageFS, prefix: str) -> int:
    """Total size of the library files (not symlinks) named prefix*.so.* in the library dirs: cuDNN 8
    alone is libcudnn.so.8 plus seven libcudnn_*.so.8 next to it."""
    sizes: dict[str, int] = {}  # by real path: /usr/local/cuda is a symlink to cuda-X.Y, both are globbed
    for pattern in LIB_DIRS:
        for directory in fs.glob(pattern):
            if fs.is_dir(directory):
                for name in fs.listdir(directory):
                    path = f"{directory}/{name}"
                    wanted = name.startswith(prefix) and ".so." in name
                    if wanted and not fs.is_symlink(path) and fs.is_file(path):
                        sizes[fs.realpath(path)] = fs.size(path)
    return sum(sizes.values())


def _from_libraries(fs: ImageFS) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for component, version, path in library_files(fs):
        if component not in found or _key(version) > _key(found[component].version):
            found[component] = CudaComponent(name=component, version=version, source=f"file:{path}")
    return found


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _from_dpkg(apt: Iterable[AptFact]) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for fact in sorted(apt, key=lambda f: (f.name, f.architecture)):
        for pattern, component in DPKG:
            if pattern.fullmatch(fact.name) and component not in found:
                found[component] = CudaComponent(
                    name=component, version=upstream_version(fact.version), source=f"dpkg:{fact.name}"
                )
    return found


def _from_version_json(fs: ImageFS) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for path in fs.glob("/usr/local/cuda*/version.json"):
        try:
            data = load_json(fs.read_bytes(path), path)  # bounded: deep nesting is refused
        except (OSError, NotKeptError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for key, component in VERSION_JSON.items():
            entry = data.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("version"), str) and component not in found:
                found[component] = CudaComponent(
                    name=component, version=entry["version"], source=f"file:{path}"
                )
    return found


def _from_env(env: Mapping[str, str]) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for key in sorted(ENV):
        value = env.get(key)
        if value and ENV[key] not in found:
            # NCCL_VERSION=2.17.1-1, NV_LIBCUBLAS_VERSION=12.1.3.1-1: Debian package versions.
            found[ENV[key]] = CudaComponent(
                name=ENV[key], version=upstream_version(value), source=f"image:env:{key}"
            )
    return found


def _from_layout(fs: ImageFS) -> dict[str, CudaComponent]:
    """The toolkit directory NVIDIA's images install into (/usr/local/cuda -> cuda-12.1)."""
    releases = sorted(
        (m.group(1) for d in fs.glob("/usr/local/cuda-*") if (m := _TOOLKIT_DIR.match(d)) and fs.is_dir(d)),
        key=_key,
    )
    if not releases:
        return {}
    chosen = releases[-1]
    if fs.is_symlink("/usr/local/cuda"):
        target = fs.realpath("/usr/local/cuda")
        match = _TOOLKIT_DIR.match(target)
        chosen = match.group(1) if match else chosen
    return {"cuda": CudaComponent(name="cuda", version=chosen, source=f"file:/usr/local/cuda-{chosen}")}


def system_components(
    fs: ImageFS, env: Mapping[str, str], apt: Iterable[AptFact]
) -> tuple[CudaComponent, ...]:
    """The CUDA stack outside Python's site directories: what a base image brings."""
    return merge(
        _from_layout(fs), _from_env(env), _from_version_json(fs), _from_dpkg(apt), _from_libraries(fs)
    )


def cuda_components(
    fs: ImageFS, env: Mapping[str, str], dists: Iterable[DistFact], apt: Iterable[AptFact] = ()
) -> tuple[CudaComponent, ...]:
    system = {c.name: c for c in system_components(fs, env, apt)}
    return merge(system, _from_wheels(dists))
