"""The GPU's clocks, temperature and power around each timed shape (NVML), so a reader of the
result can tell a slow shape from a throttled GPU. Empty where NVML is missing (CPU runs)."""

from __future__ import annotations

import os
from typing import Any

_handle: Any = None


def read(device: str) -> dict[str, Any]:
    if device != "cuda":
        return {}
    global _handle
    try:
        import pynvml

        if _handle is None:
            pynvml.nvmlInit()
            import torch

            # NVML counts every GPU of the machine; torch sees those CUDA_VISIBLE_DEVICES names.
            uuid = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", None)
            _handle = (pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}") if uuid is not None
                       else pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)))
        h = _handle
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": round(pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 1),
        }
    except Exception as exc:  # no NVML, or a query this GPU lacks: the measurement stands without it
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
