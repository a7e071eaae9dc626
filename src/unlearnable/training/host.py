"""What a run's exact numbers depend on besides the code, the data and the seed: the host and the versions.

Recorded in results.json (``host``, ``versions``, ``device``): CPU runs repeat bit for bit only on a host
with the same thread count and SIMD kernels, and the same software versions.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

import unlearnable


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, "cpu (N threads)" for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def host_info(device: torch.device | None = None) -> dict[str, Any]:
    """What a run's exact numbers depend on besides the code, the data and the seed.

    Keys: threads (``torch.get_num_threads()``: a CPU reduction splits its work per thread, so the
    float sums change with it), cpu (the model name), cpu_capability (the SIMD kernels ATen
    dispatches to, e.g. AVX2 / AVX512: their float arithmetic differs), onednn (the oneDNN version,
    which picks convolution kernels by ISA), deterministic_algorithms (``torch.use_deterministic_algorithms``),
    and on CUDA cudnn (its version) and cudnn_benchmark.
    """
    info: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": _onednn_version(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if device is not None and device.type == "cuda":
        info["cudnn"] = torch.backends.cudnn.version()
        info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _onednn_version() -> str | None:
    found = re.search(r"MKL-DNN v([\w.]+)|oneDNN v([\w.]+)", torch.__config__.show())
    return (found.group(1) or found.group(2)) if found else None


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import torchvision

    return {
        "unlearnable": unlearnable.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
