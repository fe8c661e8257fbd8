"""Test helpers: tiny model builders and the Hugging Face eager oracle (position_ids + 4D float mask)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

TINY_ARCHITECTURES = ("llama", "llama3_scaling", "qwen2", "gemma3", "gpt2")
TINY_VOCAB = 96


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(TINY_VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="t1", eos_token="t2", unk_token="t0")


def tiny_config(name: str):
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen2Config

    if name == "gpt2":  # learned absolute positions: TEMPO goes through hook_pos_embed
        return GPT2Config(vocab_size=TINY_VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2)

    common = dict(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    if name == "llama":
        return LlamaConfig(**common, rope_theta=10000.0)
    if name == "llama3_scaling":
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        return LlamaConfig(**common, rope_parameters=rope)
    if name == "qwen2":
        return Qwen2Config(**common, rope_theta=10000.0)
    if name == "gemma3":  # two rotary tables per forward: one per attention type, each with its own base
        rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
        return Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, pad_token_id=0, sliding_window=64,
                                layer_types=["sliding_attention", "full_attention", "sliding_attention"], rope_parameters=rope)
    raise KeyError(name)


def build_tiny_model(name: str, directory: Path, seed: int = 0) -> Path:
    """A random-weight model saved with a word-level tokenizer (ids ``t0..t95``); nothing is downloaded."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(name))
    # Larger weights than the default init make attention patterns and logits less uniform.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.15)
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


def hf_eager(directory) -> "torch.nn.Module":
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()


def reference_mask(layout, mode: str, window: int | None = None) -> Tensor:
    """The TEMPO mask written out loop by loop from the layout's raw lists (independent of layout.blocked).

    Query i may see key j when j <= i physically, and, for j != i: in isolated mode j is not a sibling
    of i (same step >= 0), and j was not pruned at a step earlier than i's step. ``window`` (a sliding
    layer's): also i - j < window, physical distance (docs/definitions.md).
    """
    n = len(layout.token_ids)
    mask = torch.full((n, n), float("-inf"))
    for i in range(n):
        for j in range(i + 1):
            if window is not None and i - j >= window:
                continue
            if j != i:
                if mode == "isolated" and layout.steps[i] >= 0 and layout.steps[j] == layout.steps[i]:
                    continue
                if layout.pruned_at[j] != -1 and layout.pruned_at[j] < layout.steps[i]:
                    continue
            mask[i, j] = 0.0
    return mask


TINY_PROMPT = [1, 17, 42, 5, 63, 8]
TOP3 = dict(threshold=1e-6, max_parallel=3)


def max_step_delta(result, oracle_rows) -> float:
    """The largest |logit difference| between each step's rows of a generation and the oracle's rows of the same tokens."""
    worst = 0.0
    for step, rows in enumerate(result.step_logits):
        r = result.layout.step_range(step)
        worst = max(worst, (oracle_rows[r.start : r.stop] - rows).abs().max().item())
    return worst


def tiny_oracle_delta(model, directory, mode: str) -> float:
    """Five 3-sibling steps of TINY_PROMPT on ``model`` against HF eager of ``directory`` (position_ids + 4D mask)."""
    from tempo_lens.generation import generate

    result = generate(model, TINY_PROMPT, max_steps=5, mode=mode, keep_logits=True, **TOP3)
    assert result.layout.step_sizes() == [3] * 5
    return max_step_delta(result, hf_oracle_logits(hf_eager(directory), result.layout, mode))


def sliding_window_of(hf_model) -> int | None:
    """The window of an HF model with sliding-attention layers (Gemma 3's ``layer_types``), else None."""
    config = hf_model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None) or []
    return int(config.sliding_window) if "sliding_attention" in types else None


def oracle_mask(hf_model, layout, mode: str):
    """The 4D float mask(s) for HF: one tensor, or one per layer type when the model has sliding layers."""
    full = reference_mask(layout, mode)[None, None]
    window = sliding_window_of(hf_model)
    if window is None:
        return full
    return {"full_attention": full, "sliding_attention": reference_mask(layout, mode, window)[None, None]}


def _rows(mask, a: int, b: int):
    """Query rows ``a:b`` over keys ``:b`` of a mask or of each mask in a per-layer-type dict."""
    if isinstance(mask, dict):
        return {kind: m[..., a:b, :b] for kind, m in mask.items()}
    return mask[..., a:b, :b]


def hf_oracle_logits(hf_model, layout, mode: str = "isolated", positions: Tensor | None = None) -> Tensor:
    """HF eager over the whole physical sequence with explicit position_ids and a 0/-inf 4D mask.

    A model with sliding layers gets one mask per layer type (``{"full_attention", "sliding_attention"}``),
    the sliding one also hiding keys ``sliding_window`` or more physical positions back.
    """
    ids = torch.tensor([layout.token_ids])
    pos = (torch.tensor(layout.logical_positions) if positions is None else positions).long()[None]
    with torch.no_grad():
        return hf_model(input_ids=ids, position_ids=pos, attention_mask=oracle_mask(hf_model, layout, mode)).logits[0]


# ---- a fake model zoo: part "wheels" on a temporary sys.path entry, and a fake dequantiser ---------------

def fake_zoo_model(site: Path, name: str, payload: bytes, n_parts: int = 3, **overrides):
    """A zoo entry whose GGUF is ``payload`` split over ``n_parts`` fake part wheels written under ``site``.

    Each part package raises on import: the zoo must find its files without importing it. Put
    ``site`` on ``sys.path`` to "install" the parts.
    """
    import hashlib

    from tempo_lens.models.zoo import Part, ZooModel

    parts = []
    step = -(-len(payload) // n_parts)
    for i in range(1, n_parts + 1):
        module = f"fakezoo_{name.replace('-', '_').replace('.', '_')}_part{i}"
        (site / module / "data").mkdir(parents=True, exist_ok=True)
        (site / module / "__init__.py").write_text("raise ImportError('a part wheel must never be imported')\n")
        (site / module / "data" / f"part{i:02d}.bin").write_bytes(payload[(i - 1) * step : i * step])
        parts.append(Part(f"fakezoo-{name}-part{i}", "1.0.0", module, f"data/part{i:02d}.bin"))
    fields = dict(
        name=name, title=f"Fake {name}", architecture="llama", quantisation="Q4_0", parts=tuple(parts),
        gguf_file=f"{name}.gguf", gguf_bytes=len(payload), gguf_sha256=hashlib.sha256(payload).hexdigest(),
        layers=3, heads=4, kv_heads=2, d_model=64, params=1000, disk_bytes=10_000, fp32_memory_bytes=4000, licence="test",
    )
    fields.update(overrides)
    return ZooModel(**fields)


def fake_dequantise(gguf: Path, out: Path, title: str) -> None:
    """Stands in for transformers: a small model folder whose weights record the joined GGUF's bytes."""
    import json

    from safetensors.torch import save_file

    data = torch.frombuffer(bytearray(gguf.read_bytes()), dtype=torch.uint8)
    save_file({"gguf": data.clone(), "w": torch.randn(64, 64)}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "_name_or_path": title}))
    (out / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {f"t{i}": i for i in range(50)}}}))


def hf_stepwise_logits(hf_model, layout, mode: str = "isolated") -> list[Tensor]:
    """HF eager with its own KV cache, fed like a TEMPO generation: the prompt, then one step at a time.

    Each forward gets explicit position_ids and its rows of the 0/-inf 4D mask(s); returns the logits of
    every step's rows. Same chunking as the generation, so fp32 rounding matches too: cached decoding
    differs from one full forward by up to ~1e-3 on a 28-layer model, in HF itself.
    """
    from transformers import DynamicCache

    ids = torch.tensor([layout.token_ids])
    pos = torch.tensor(layout.logical_positions)[None]
    mask = oracle_mask(hf_model, layout, mode)
    # Every key kept on every layer (a sliding layer's cache would drop the keys its window mask addresses).
    cache = DynamicCache() if isinstance(mask, dict) else DynamicCache(config=hf_model.config)
    bounds = [0, layout.step_range(0).start] + [layout.step_range(s).stop for s in range(layout.n_steps)]
    rows = []
    with torch.no_grad():
        for a, b in zip(bounds[:-1], bounds[1:]):
            out = hf_model(input_ids=ids[:, a:b], position_ids=pos[:, a:b], attention_mask=_rows(mask, a, b),
                           past_key_values=cache, use_cache=True).logits[0]
            rows.append(out)
    return rows[1:]
