"""Free memory where a model runs: the GPU's free memory, or the machine's available RAM (a bottom-level reading)."""

from __future__ import annotations

import os

import torch


def available_bytes(device: torch.device) -> int:
    """Free memory where the model runs: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
