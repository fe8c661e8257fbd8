"""What a run was measured on: the machine, the software, the model, and loading the models."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def _cpu_model() -> str:
    """CPU model name, plus family / model and the AVX-512 flags (VMs often report only "AMD EPYC")."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if ":" in line:
                    key, value = (part.strip() for part in line.split(":", 1))
                    info.setdefault(key, value)
                if not line.strip() and info:
                    break
    except OSError:
        return platform.processor() or platform.machine()
    name = info.get("model name", platform.processor() or platform.machine())
    flags = info.get("flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    extra = f" (family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else " ("
    return f"{name}{extra}{', ' if extra != ' (' else ''}{' '.join(simd) or 'no avx2'})"


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "loadavg_start": loadavg() or [float("nan")] * 3,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def model_info(model: "TransformerBridge") -> dict:
    from tempo_lens.backends.bridge.fast_paths import fast_paths_on
    from tempo_lens.models.loading import model_name

    cfg = model.cfg
    n_params = sum(p.numel() for p in model.original_model.parameters())
    return {
        "name": str(model_name(model)), "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
        "d_model": int(cfg.d_model), "d_vocab": int(cfg.d_vocab), "params": int(n_params),
        "dtype": str(next(model.original_model.parameters()).dtype).replace("torch.", ""),
        "fast_paths": fast_paths_on(model),
    }


def load_models(model_path: str | None = None, with_hf: bool = True, device: str = "cpu") -> tuple["TransformerBridge", Any]:
    """The bridge (``model_path`` or the embedded model) and, for section 4, HF eager on the same weights."""
    from tempo_lens import load_model
    from tempo_lens.models.loading import embedded_model_dir

    model = load_model(model_path, device=device)
    hf = None
    if with_hf:
        from transformers import AutoModelForCausalLM

        directory = model_path or embedded_model_dir()
        hf = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).to(device).eval()
    return model, hf
