"""Where a TEMPO step's time goes on the nnsight backend, B = 1, beside greedy HF ``generate`` (eager).

Three passes over the same 4 prompts x 10 steps, interleaved in rotated order each round: TEMPO as it
runs (a step nothing observes calls HF's forward without a trace; no forward after the last step where
nothing reads it), TEMPO as it ran before those two (every forward an nnsight trace, the forward after the
last step run), and ``hf.generate`` (10 forwards a generation). Timers wrapped around the stages give ms
per forward made::

    python -m benchmarks.nnsight_breakdown [--threshold 0.1] [--rounds 6] [--batch 16]

``--threshold 1.0`` is TEMPO with one token a step (k = 1), the same work per forward as HF's. ``--batch B``
runs B prompts as one batch (``generate_batch``; HF: one left-padded ``generate``) instead of 4 one at a time.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Sequence
from typing import Any

STAGES = {  # (module path, class or None, attribute): the label a timer wrapped around it reports
    ("tempo_lens.backends.nnsight", "NnsightBackend", "tempo_forward"): "tempo_forward (masks, positions, forward)",
    ("tempo_lens.backends.nnsight", None, "float_masks"): "4D float masks",
    ("tempo_lens.generation.lanes", "LaneBatch", "feed"): "lane feed (positions, bool masks)",
    ("tempo_lens.generation.row", "GenerationRow", "choose"): "choose (selection)",
    ("tempo_lens.generation.row", "GenerationRow", "read_step"): "read_step (finite check, next distribution)",
    ("tempo_lens.generation.row", "GenerationRow", "read_prompt"): "read_prompt",
    ("tempo_lens.generation.row", "GenerationRow", "start"): "row start (tokenise, checks)",
}


def _timed(spent: dict[str, float], label: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

    return wrapper


def wrapper_cost(plain: Any, wrapped: Any, context: int = 24, rounds: int = 40, block: int = 5) -> tuple[float, float, list[float]]:
    """Median ms of one cached one-token forward of plain HF and of the nnsight model's HF module (outside any
    trace, nnsight's per-module controllers still run), alternating in blocks; returns both and the paired ratios."""
    import torch
    from transformers import DynamicCache

    def cache_for(hf: Any) -> Any:
        cache = DynamicCache()
        with torch.no_grad():
            hf(input_ids=torch.arange(1, context + 1)[None], position_ids=torch.arange(context)[None], past_key_values=cache,
               use_cache=True)
        return cache

    caches = {"plain": cache_for(plain), "wrapped": cache_for(wrapped)}
    models = {"plain": plain, "wrapped": wrapped}
    times: dict[str, list[float]] = {"plain": [], "wrapped": []}
    token, position = torch.tensor([[7]]), torch.tensor([[context]])
    for r in range(rounds):
        for name in ("plain", "wrapped") if r % 2 else ("wrapped", "plain"):
            t0 = time.perf_counter()
            for _ in range(block):
                with torch.no_grad():
                    models[name](input_ids=token, position_ids=position, past_key_values=caches[name], use_cache=True,
                                 logits_to_keep=1)
                caches[name].crop(-1)
            times[name].append(1000 * (time.perf_counter() - t0) / block)
    ratios = [w / p for p, w in zip(times["plain"], times["wrapped"])]
    return statistics.median(times["plain"]), statistics.median(times["wrapped"]), ratios


def main(argv: Sequence[str] | None = None) -> int:
    from . import set_environment

    set_environment()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nnsight_breakdown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1, help="prompts per batch (1: 4 prompts one at a time)")
    args = parser.parse_args(argv)
    import importlib

    from tempo_lens import load_model
    from tempo_lens.backends import backend_for
    from tempo_lens.generation import generate, generate_batch

    from .generate import hf_runner, load_hf
    from .machine import machine_info
    from .sweep import sweep_prompts

    info = machine_info()
    print(f"on {info['cpu']}, {info['cores_usable']} usable cores, torch {info['torch']} ({info['torch_threads']} threads), "
          f"load {info.get('loadavg_start')}", flush=True)
    model = load_model(None, backend="nnsight", device="cpu")
    backend = backend_for(model)
    hf, tokenizer = load_hf(None, "cpu")
    prompts = sweep_prompts(4 if args.batch == 1 else args.batch)
    settings = {"threshold": args.threshold, "mode": "isolated", "max_steps": 10, "min_steps": 10}
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    spent_calls: dict[str, int] = {}
    for (module, owner, name), label in STAGES.items():
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        setattr(target, name, _timed(spent, label, getattr(target, name)))
    forward = _timed(spent, "HF forward (inside tempo_forward)", backend.hf.forward)

    def counted(*a: Any, **k: Any) -> Any:
        calls["n"] = calls.get("n", 0) + 1
        return forward(*a, **k)

    backend.hf.forward = counted
    batches = [[p] for p in prompts] if args.batch == 1 else [prompts]
    hf_passes = [hf_runner(hf, tokenizer, batch, 10, "eager") for batch in batches]

    def tempo() -> None:
        for batch in batches:
            if len(batch) == 1:
                generate(model, batch[0], progress=False, **settings)
            else:
                generate_batch(model, batch, batch_size=len(batch), progress=False, **settings)

    from tempo_lens.generation import explicit

    def before() -> None:
        backend._unobserved = lambda *_: False
        ends_unread, explicit.ends_unread = explicit.ends_unread, lambda row: False
        try:
            tempo()
        finally:
            del backend._unobserved
            explicit.ends_unread = ends_unread

    runs = {"tempo": tempo, "tempo before": before, "hf eager": lambda: [p() for p in hf_passes]}
    for run in runs.values():
        run()  # warm-up
    calls.clear()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    stages: dict[str, dict[str, float]] = {name: {} for name in runs}
    names = list(runs)
    for i in range(args.rounds):
        for name in names[i % 3 :] + names[: i % 3]:
            spent.clear()
            t0 = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - t0)
            for label, value in spent.items():
                stages[name][label] = stages[name].get(label, 0.0) + value
            spent_calls[name] = spent_calls.get(name, 0) + calls.pop("n", 0)
    print(f"threshold {args.threshold}, B = {args.batch}, {args.rounds} rounds; pass medians (s): "
          + ", ".join(f"{name} {statistics.median(v):.3f}" for name, v in seconds.items()))
    for name in ("tempo", "tempo before"):
        ratios = [h / t for h, t in zip(seconds["hf eager"], seconds[name])]
        print(f"  {name} / hf eager steps/s: median {statistics.median(ratios):.3f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
    for name in ("tempo", "tempo before"):
        total = sum(seconds[name])
        forwards = round(spent_calls[name])
        print(f"{name}: ms per forward (share of the pass)")
        for label, value in sorted(stages[name].items(), key=lambda item: -item[1]):
            print(f"  {label:45s} {1000 * value / forwards:8.2f}  {100 * value / total:5.1f}%")
        print(f"  {'whole generate':45s} {1000 * total / forwards:8.2f}  ({forwards / args.rounds / len(batches):.0f} forwards a generation)")
    print(f"hf eager generate: {1000 * sum(seconds['hf eager']) / (args.rounds * len(batches) * 10):.2f} ms per forward (10 a generation)")
    backend.hf.forward = forward.__wrapped__  # nnsight's own controller again, without this script's timer
    hf.set_attn_implementation("eager")
    plain_ms, wrapped_ms, ratios = wrapper_cost(hf, backend.hf)
    ratios.sort()
    print(f"nnsight's module controllers outside a trace (one cached one-token forward, context 24, B = 1): plain HF "
          f"{plain_ms:.2f} ms, the nnsight model's HF module {wrapped_ms:.2f} ms; paired ratio median "
          f"{statistics.median(ratios):.3f} [{ratios[len(ratios) // 8]:.3f}-{ratios[-1 - len(ratios) // 8]:.3f}] (middle 3/4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
