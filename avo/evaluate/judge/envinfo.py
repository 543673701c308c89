"""Where a measurement was taken: GPU, driver, library versions. Never imports cutlass or
flash_attn (slow, and may fail); versions come from package metadata."""

from __future__ import annotations

import platform
import socket
import sys
from importlib import metadata
import re
from pathlib import Path
from typing import Any

import torch


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _driver() -> str | None:
    # The kernel module's version line: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15 ..."
    # or, for the open module, "... Open Kernel Module for x86_64  580.159.04 ...".
    try:
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", line)
    return found.group(1) if found else line.strip()


def collect(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cutlass_dsl": _version("nvidia-cutlass-dsl"),
        "flash_attn_4": _version("flash-attn-4") or _version("fa4"),
        "triton": _version("triton"),
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        env.update(
            gpu=torch.cuda.get_device_name(idx),
            capability=f"sm_{props.major}{props.minor}",
            sm_count=props.multi_processor_count,
            l2_bytes=getattr(props, "L2_cache_size", None),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            driver=_driver(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env
