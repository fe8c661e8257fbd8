"""Load-time checks: is a model folder usable, and can the TEMPO hooks serve a loaded model?

:func:`folder_problem` reads only headers and small files: ``config.json`` and the other JSON files
must parse, each ``*.safetensors`` file must be exactly as long as its header says (a truncated or
padded file is named), an index's shards must exist, and config.json's ``hidden_size`` and
``vocab_size`` must fit the token embedding's shape. :func:`hooks_problem` runs a two-token
forward with counting hooks, so a model whose positions or attention scores cannot be reached
through hook points, or whose logits overflow its dtype, is refused when it is loaded, not in the
middle of a generation.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import describe

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_JSON_LIMIT = 64 * 2**20
_DTYPE_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


def read_safetensors_header(path: Path) -> dict | str:
    """The header of a safetensors file after checking it against the file's length, or what is wrong."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (n,) = struct.unpack("<Q", handle.read(8))
            if n > size - 8:
                return f"{path.name} is truncated ({size} bytes; its header alone claims {n + 8})"
            header = json.loads(handle.read(n).decode("utf-8"))
    except (struct.error, UnicodeDecodeError, ValueError):
        return f"{path.name} has an unreadable header (not a safetensors file, or damaged)"
    if not isinstance(header, dict):
        return f"{path.name} has an unreadable header (not a safetensors file, or damaged)"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            count = 1
            for dim in entry["shape"]:
                count *= dim
        except (KeyError, TypeError, ValueError):
            return f"{path.name} has a malformed header entry for {name!r}"
        width = _DTYPE_BYTES.get(entry.get("dtype"))
        if width is not None and stop - start != count * width:
            return f"{path.name}: tensor {name!r} has {stop - start} bytes for shape {entry['shape']} ({entry['dtype']})"
        end = max(end, stop)
    expected = 8 + n + end
    if size != expected:
        return f"{path.name} is {'truncated' if size < expected else 'longer than its header says'} ({size} bytes, expected {expected})"
    return header


def _config_weights_problem(config: dict, shapes: dict[str, list[int]]) -> str | None:
    """Whether config.json's sizes contradict the token embedding's shape in the weights."""
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden = text_config.get("hidden_size", text_config.get("n_embd"))
    vocab = text_config.get("vocab_size")
    for name, shape in shapes.items():
        if name.endswith(("embed_tokens.weight", "wte.weight")) and len(shape) == 2:
            if hidden is not None and shape[1] != hidden:
                return f"config.json says hidden_size {hidden} but the weights' {name} has width {shape[1]}"
            if vocab is not None and shape[0] != vocab:
                return f"config.json says vocab_size {vocab} but the weights' {name} has {shape[0]} rows"
    return None


def _json_problem(path: Path) -> str | None:
    if path.stat().st_size > _JSON_LIMIT:
        return None
    try:
        json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return f"{path.name} is not UTF-8 text (damaged)"
    except ValueError as exc:
        return f"{path.name} is not valid JSON ({describe(exc)})"
    return None


def folder_problem(directory: Path) -> str | None:
    """Why a local model folder cannot be loaded (naming the damaged file), or None when it looks whole."""
    if not (directory / "config.json").is_file():
        return "no config.json (not a Hugging Face model folder)"
    for path in sorted(directory.glob("*.json")):
        try:
            problem = _json_problem(path)
        except RecursionError:
            problem = f"{path.name} nests too deeply to be a model file (damaged)"
        if problem:
            return problem
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not (config.get("model_type") or config.get("architectures")):
        return "config.json names no model_type (not a model config)"
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (directory / s).is_file())
        if missing:
            return f"weight shards listed in {index.name} are missing: {', '.join(missing)}"
    weights = sorted(directory.glob("*.safetensors"))
    pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt") for p in directory.glob(pattern))
    if not weights and pickled:
        return (
            f"its weights are pickled ({', '.join(pickled[:3])}); tempo_lens loads only safetensors weights, because "
            "loading a pickle can run code. Use a copy of the model that ships model.safetensors"
        )
    if not weights:
        return "no weights (*.safetensors)"
    shapes: dict[str, list[int]] = {}
    for path in weights:
        header = read_safetensors_header(path)
        if isinstance(header, str):
            return header
        shapes.update({name: entry["shape"] for name, entry in header.items() if name != "__metadata__"})
    return _config_weights_problem(config, shapes)


def hooks_problem(model: TransformerBridge) -> str | None:
    """What a loaded model lacks for TEMPO (positions, score masks, patterns), or None.

    Besides the hook names, a forward of a short prompt checks that the position hook and the score
    hooks fire and that the logits are finite (Gemma 3 overflows float16, for example).
    """
    import torch  # deferred: torch

    from ..backends import backend_for  # deferred: torch

    position_hooks = backend_for(model).position_hook_names()
    if not position_hooks:
        return (
            "the TEMPO hooks cannot serve it: it exposes neither rotary position hooks (RoPE) nor hook_pos_embed "
            "(learned positions); use a RoPE (Llama, Qwen, Gemma, ...) or GPT-2 family model"
        )
    position_hook = position_hooks[0]
    needed = [position_hook] + [
        f"blocks.{layer}.attn.{hook}" for layer in range(model.cfg.n_layers) for hook in ("hook_attn_scores", "hook_pattern")
    ]
    absent = [name for name in needed if name not in model.hook_dict]
    if absent:
        return f"the TEMPO hooks cannot serve it: it has no {absent[0]} hook point" + (
            f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        )
    fired: set[str] = set()

    def counter(name: str) -> Any:  # by the name asked for: hook.name may be the alias's target
        return lambda tensor, hook: fired.add(name)

    probe = [position_hook, "blocks.0.attn.hook_attn_scores"]
    with torch.no_grad():
        logits = model.run_with_hooks(_probe_tokens(model), fwd_hooks=[(name, counter(name)) for name in probe])
    silent = [name for name in probe if name not in fired]
    if silent:
        what = "positions" if silent[0] == position_hook else "scores"
        return f"the TEMPO hooks cannot serve it: {silent[0]} exists but never fires in a forward (its {what} are computed elsewhere)"
    if not bool(torch.isfinite(logits).all()):
        dtype = str(backend_for(model).dtype).removeprefix("torch.")
        return f"its logits are not finite in {dtype} on a short prompt (activations overflow this dtype); load it in bfloat16 or float32"
    return None


def _probe_tokens(model: TransformerBridge) -> Any:
    """A short real prompt (with the model's BOS when it uses one): token 0 alone can hide overflows."""
    import torch  # deferred: torch

    from ..backends import backend_for  # deferred: torch

    device = backend_for(model).device
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        try:
            ids = tokenizer("The cat sat on the", return_tensors="pt").input_ids
            if ids.numel():
                return ids[:, :8].to(device)
        except Exception:  # a tokenizer that cannot encode plain text: fall back to token ids
            pass
    return torch.zeros(1, 2, dtype=torch.long, device=device)
