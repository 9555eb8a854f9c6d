"""The CUDA stack an image carries: NVIDIA's wheels in a site directory, the libraries' real file
names (libcudart.so.12.1.105), /usr/local/cuda*/version.json, and the env NVIDIA's base images set.

One version per component. What the code will load wins: a wheel, then a library file, then the
toolkit's version.json, then the image env, which only records what the base image was built with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from mlenv.models import CudaComponent, DistFact
from mlenv.observe.rootfs import ImageFS, NotKeptError

INTEREST = (r"/usr/local/cuda[^/]*/version\.(json|txt)", r"(/[^/]+)*/include/([^/]+/)?cudnn_version(_v[0-9]+)?\.h")

ENV = {"CUDA_VERSION": "runtime", "NV_CUDNN_VERSION": "cudnn", "CUDNN_VERSION": "cudnn", "NCCL_VERSION": "nccl",
       "NV_LIBNCCL_PACKAGE_VERSION": "nccl", "NV_LIBCUBLAS_VERSION": "cublas"}
WHEELS = {"nvidia-cuda-runtime": "runtime", "nvidia-cudnn": "cudnn", "nvidia-cublas": "cublas",
          "nvidia-nccl": "nccl", "nvidia-nvjitlink": "nvjitlink"}
LIBRARIES = {"libcudart": "runtime", "libcudnn": "cudnn", "libcublas": "cublas", "libnccl": "nccl",
             "libnvJitLink": "nvjitlink"}
VERSION_JSON = {"cuda_cudart": "runtime", "libcublas": "cublas", "libnvjitlink": "nvjitlink"}
_LIBRARY = re.compile(r"^(lib[A-Za-z]+)\.so\.(\d+\.\d+(?:\.\d+)*)$")
_LIB_DIRS = ("/usr/local/cuda*/lib64", "/usr/local/cuda*/targets/*/lib", "/usr/lib/x86_64-linux-gnu",
             "/usr/lib/aarch64-linux-gnu", "/usr/lib64")


def _from_wheels(dists: Iterable[DistFact]) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for dist in sorted(dists, key=lambda d: (d.site, d.name)):
        base = re.sub(r"-cu\d+$", "", dist.name)
        if base in WHEELS and WHEELS[base] not in found:
            found[WHEELS[base]] = CudaComponent(name=WHEELS[base], version=dist.version, source=f"wheel:{dist.name}")
    return found


def _from_libraries(fs: ImageFS) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for pattern in _LIB_DIRS:
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
                component = LIBRARIES[match.group(1)]
                if component not in found or _key(match.group(2)) > _key(found[component].version):
                    found[component] = CudaComponent(name=component, version=match.group(2), source=f"file:{path}")
    return found


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _from_version_json(fs: ImageFS) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for path in fs.glob("/usr/local/cuda*/version.json"):
        try:
            data = json.loads(fs.read_bytes(path))
        except (OSError, NotKeptError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for key, component in VERSION_JSON.items():
            entry = data.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("version"), str) and component not in found:
                found[component] = CudaComponent(name=component, version=entry["version"], source=f"file:{path}")
    return found


def _from_env(env: Mapping[str, str]) -> dict[str, CudaComponent]:
    found: dict[str, CudaComponent] = {}
    for key in sorted(ENV):
        value = env.get(key)
        if value and ENV[key] not in found:
            version = value.split("-", 1)[0] if key.startswith("NV_LIB") else value
            found[ENV[key]] = CudaComponent(name=ENV[key], version=version, source=f"image:env:{key}")
    return found


def cuda_components(fs: ImageFS, env: Mapping[str, str], dists: Iterable[DistFact]) -> tuple[CudaComponent, ...]:
    merged: dict[str, CudaComponent] = {}
    for layer in (_from_env(env), _from_version_json(fs), _from_libraries(fs), _from_wheels(dists)):
        merged.update(layer)  # later sources are closer to what gets loaded
    return tuple(merged[name] for name in sorted(merged))
