"""How CUDA components are named and combined, wherever they were found (an image, a lock, a wheel).

Components: "cuda" is the toolkit release (12.1.1); "runtime" is libcudart's own version (12.1.105),
the one NVIDIA's wheels carry; then "cudnn", "cublas", "nccl", "nvjitlink". Pure rules, no IO: the lock
reads them without loading the image observer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mlenv.model.facts import CudaComponent

WHEELS = {
    "nvidia-cuda-runtime": "runtime",
    "nvidia-cudnn": "cudnn",
    "nvidia-cublas": "cublas",
    "nvidia-nccl": "nccl",
    "nvidia-nvjitlink": "nvjitlink",
}


def wheel_component(name: str) -> str | None:
    """The component an NVIDIA wheel carries: nvidia-cudnn-cu12 -> "cudnn"; None for other names."""
    return WHEELS.get(re.sub(r"-cu\d+$", "", name))


def refines(precise: str, coarse: str) -> bool:
    """'8.9.0.131' says '8.9.0' more precisely; '8.9.2.26' does not."""
    return precise.startswith(coarse + ".")


def merge(*layers: Mapping[str, CudaComponent]) -> tuple[CudaComponent, ...]:
    """One component per name from sources in rising precedence (an image's order is in
    mlenv.observe.probes.cuda); a lower source refines a higher one that says the same version coarser."""
    merged: dict[str, CudaComponent] = {}
    for layer in layers:
        for name, component in layer.items():
            previous = merged.get(name)
            if previous is None or not refines(previous.version, component.version):
                merged[name] = component
    return tuple(merged[name] for name in sorted(merged))
