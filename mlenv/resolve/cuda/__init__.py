"""The CUDA layer: NVIDIA's driver table (floors), torch's variants, the locked wheels' dependency
edges, the stack the lock records with its cross-checks, and the host driver verdict. The names others
import are re-exported here."""

from mlenv.resolve.cuda.edges import Edge, Requires, edges, exact_pin, fetch_requires, needs_metadata
from mlenv.resolve.cuda.floors import (
    DRIVER_TABLE,
    DriverFloors,
    driver_floors,
    driver_satisfies,
    major_minor,
    minor_compat_floor,
    toolkit_floor,
    version_key,
    wheel_release,
)
from mlenv.resolve.cuda.host import DriverVerdict, ForwardCompat, driver_verdict, forward_compat
from mlenv.resolve.cuda.stack import BaseCuda, CudaResolution, check_request, lock_cuda
from mlenv.resolve.cuda.variants import (
    PYTORCH_INDEX,
    cuda_label,
    label_release,
    requirement_label,
    torch_index,
    version_label,
)

__all__ = [
    "DRIVER_TABLE",
    "PYTORCH_INDEX",
    "BaseCuda",
    "CudaResolution",
    "DriverFloors",
    "DriverVerdict",
    "Edge",
    "ForwardCompat",
    "Requires",
    "check_request",
    "cuda_label",
    "driver_floors",
    "driver_satisfies",
    "driver_verdict",
    "edges",
    "exact_pin",
    "fetch_requires",
    "forward_compat",
    "label_release",
    "lock_cuda",
    "major_minor",
    "minor_compat_floor",
    "needs_metadata",
    "requirement_label",
    "toolkit_floor",
    "torch_index",
    "version_key",
    "version_label",
    "wheel_release",
]
