"""The two backends side by side: a TEMPO decode and a k = 8 step on the bridge and on HookedTransformer, beside HF eager.

Runs where both model classes exist (TransformerLens 3.x: ``make bench`` runs it in ``.venv-tl3``). All three
models hold the same fp32 weights. Each step works at a fixed context (C random prompt tokens in a KV cache):
the timed region selects nothing, appends the step's tokens to the layout, runs one cached forward with the
TEMPO hooks held open (HF: explicit ``position_ids`` and its rows of a 4D float mask, the oracle's way) and
takes the next distribution; the cache and layout are rolled back outside it. Every number is a ratio of two
variants measured in this run (:mod:`benchmarks.harness`); the CPU is printed first.

    python -m benchmarks.backends [--model NAME_OR_PATH] [--context 64] [--rounds 15] [--block 5]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from tempo_lens import load_model
from tempo_lens.backends import backend_for
from tempo_lens.generation import new_cache, next_distribution
from tempo_lens.hooks import tempo_hooks
from tempo_lens.layout import TokenLayout

from .harness import PERF, Block, fmt_ratio, interleave, jsonable, ratio, table
from .machine import machine_info

K = 8


def _crop(cache: Any, n: int) -> None:
    """Drop the last ``n`` positions of a transformers DynamicCache or a TransformerLens KV cache."""
    if hasattr(cache, "crop"):
        cache.crop(-n)
        return
    for entry in cache.entries:
        entry.past_keys, entry.past_values = entry.past_keys[:, :-n], entry.past_values[:, :-n]
    cache.previous_attention_mask = cache.previous_attention_mask[:, :-n]


def tempo_block(model: Any, context: list[int], k: int, mode: str = "isolated") -> Block:
    """k siblings per step through the TEMPO hooks (k = 1: a decode), at a fixed context."""
    backend = backend_for(model)
    layout = TokenLayout.from_prompt(context)
    cache = new_cache(model)
    with torch.no_grad():
        backend.forward_step([context], cache)
    ids, probs = list(range(10, 10 + k)), [0.9 / k] * k

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad(), model.hooks(fwd_hooks=tempo_hooks(model, layout, mode)):
            for _ in range(n):
                t0 = PERF()
                layout.append_step(ids, probs)
                logits = backend.forward_step([ids], cache)[0]
                next_distribution(logits, probs, "mixture")
                times.append(PERF() - t0)
                _crop(cache, k)
                layout.truncate(len(context))
        return times

    return run


def hf_block(hf: Any, context: list[int], k: int, mode: str = "isolated") -> Block:
    """The same step on HF eager: shared position_ids and the step's rows of a 0/-inf 4D mask."""
    from transformers import DynamicCache

    cache = DynamicCache(config=hf.config)
    with torch.no_grad():
        hf(input_ids=torch.tensor([context]), past_key_values=cache, use_cache=True)
    c = len(context)
    mask = torch.zeros(1, 1, k, c + k)
    if mode == "isolated":
        mask[..., c:] = torch.where(torch.eye(k, dtype=torch.bool), 0.0, float("-inf"))
    else:
        mask[..., c:] = torch.triu(torch.full((k, k), float("-inf")), diagonal=1)
    positions, ids, probs = torch.full((1, k), c), torch.tensor([list(range(10, 10 + k))]), [0.9 / k] * k

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad():
            for _ in range(n):
                t0 = PERF()
                logits = hf(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache, use_cache=True).logits[0]
                next_distribution(logits, probs, "mixture")
                times.append(PERF() - t0)
                _crop(cache, k)
        return times

    return run


def measure(model_name: str | None = None, context: int = 64, rounds: int = 15, block: int = 5) -> dict:
    from transformers import AutoModelForCausalLM

    from tempo_lens.models.loading import _resolve

    info = machine_info()
    print(f"CPU: {info['cpu']} ({info['cores_usable']} usable cores), torch {info['torch']}, "
          f"TransformerLens {info['transformer_lens']}", flush=True)
    bridge = load_model(model_name, device="cpu")
    hooked = load_model(model_name, backend="hooked", device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(_resolve(model_name or "smollm2-135m"), attn_implementation="eager",
                                              dtype=torch.float32).eval()
    ids = torch.randint(3, int(bridge.cfg.d_vocab), (context,), generator=torch.Generator().manual_seed(0)).tolist()
    variants = {}
    for k, label in ((1, "decode"), (K, f"k={K}")):
        variants[f"hf {label}"] = hf_block(hf, ids, k)
        variants[f"bridge {label}"] = tempo_block(bridge, ids, k)
        variants[f"hooked {label}"] = tempo_block(hooked, ids, k)
    groups = [[f"hf {label}", f"bridge {label}", f"hooked {label}"] for label in ("decode", f"k={K}")]
    measured = interleave(variants, groups, rounds, block=block)
    rows, results = [], {}
    for label in ("decode", f"k={K}"):
        for num, den in ((f"bridge {label}", f"hf {label}"), (f"hooked {label}", f"hf {label}"), (f"hooked {label}", f"bridge {label}")):
            r = ratio(measured, num, den)
            results[f"{num} / {den}"] = r
            rows.append((f"{num} / {den}", fmt_ratio(r), f"{r['num_ms']:.1f} / {r['den_ms']:.1f} ms"))
    print(table(["ratio (medians of paired rounds)", "value [quartiles; fastest]", "median step"], rows))
    return {"machine": info, "context": context, "rounds": rounds, "block": block, "ratios": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    out = measure(args.model, args.context, args.rounds, args.block)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(jsonable(out), f, indent=1)


if __name__ == "__main__":
    main()
