"""The machine and library versions a result was measured on (stored with every result)."""

from __future__ import annotations

import contextlib
import os
import platform

import torch


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": os.getloadavg(),
    }
    try:
        import transformers
        import trl

        info["transformers"], info["trl"] = transformers.__version__, trl.__version__
    except ImportError:
        pass
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
