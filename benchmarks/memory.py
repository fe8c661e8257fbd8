"""Peak memory of one piece of work, measured in the process that does it.

``tracemalloc`` sees only Python objects, not torch's buffers, so the resident set size is used: on
Linux the peak (``VmHWM``) is reset by writing 5 to ``/proc/self/clear_refs`` just before the work, so
model loading does not count; elsewhere ``ru_maxrss`` is the lifetime peak (model loading included).
On CUDA the allocator's own peak is reported too. Run each measurement in a fresh process (see
:func:`run_child`), so memory freed by earlier work and kept by the allocator cannot hide a new peak.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
_MB = 2**20


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Resident set size now (MB); the lifetime peak where the current value cannot be read."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else _maxrss_mb()


def _maxrss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024   # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / _MB


def reset_peak(device: torch.device) -> str:
    """Start a new peak here; returns how the peak will be read (for the report)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return "VmHWM, reset before the work"
    except OSError:
        return "ru_maxrss (lifetime peak, model loading included)"


def peak(device: torch.device, rss_before: float) -> dict:
    """Peak resident set (MB) since :func:`reset_peak`, its rise over ``rss_before``, and the CUDA peak."""
    kb = _status_kb("VmHWM")
    peak_rss = kb / 1024 if kb is not None else _maxrss_mb()
    out: dict[str, Any] = {"rss_before_mb": rss_before, "peak_rss_mb": peak_rss, "peak_rise_mb": peak_rss - rss_before}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / _MB
    return out


def run_child(args: list[str], timeout: float = 3600) -> dict:
    """Run ``python -m benchmarks ARGS`` in a fresh process; its last stdout line is its JSON answer.

    The child imports the same ``tempo_lens`` as this process and this repository's ``benchmarks``.
    """
    import tempo_lens

    paths = [str(Path(tempo_lens.__file__).resolve().parents[1]), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])
