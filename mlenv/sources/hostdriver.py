"""The NVIDIA driver version of this machine: nvidia-smi when it is installed, else the kernel
module's /proc/driver/nvidia/version. None when neither says anything (no GPU, or no driver)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

PROC_VERSION = Path("/proc/driver/nvidia/version")
# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023"
_PROC = re.compile(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+\.\d+(?:\.\d+)?)")
_VERSION = re.compile(r"^\d+\.\d+(?:\.\d+)?$")


def parse_nvidia_smi(output: str) -> str | None:
    """The first GPU's driver version from `nvidia-smi --query-gpu=driver_version --format=csv,noheader`."""
    for line in output.splitlines():
        if _VERSION.match(line.strip()):
            return line.strip()
    return None


def parse_proc_version(text: str) -> str | None:
    match = _PROC.search(text)
    return match.group(1) if match else None


def host_driver_version(
    *, nvidia_smi: str | None = None, proc_version: Path = PROC_VERSION
) -> tuple[str, str] | None:
    """(driver version, where it was read) of this machine, or None when no NVIDIA driver answers."""
    smi = nvidia_smi or shutil.which("nvidia-smi")
    if smi is not None:
        try:
            result = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0:
            version = parse_nvidia_smi(result.stdout)
            if version is not None:
                return version, "nvidia-smi"
    try:
        version = parse_proc_version(proc_version.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return (version, str(proc_version)) if version is not None else None
