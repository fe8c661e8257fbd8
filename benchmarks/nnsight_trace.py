"""The nnsight backend: TEMPO through nnsight against HF ``generate``, and nnsight's fixed cost per trace.

Section 8 (:mod:`~benchmarks.generate`) with ``--backend nnsight``: steps/s of nnsight TEMPO beside greedy
``hf.generate`` (eager and sdpa), B = 1 and B = 16, capture on and off, as paired ratios from one run.
Then the cost of one trace: the same cached one-token forward (position_ids and a 4D float mask, context
``--context``) four ways, side by side in rotated order: HF's own forward, ``tempo_forward`` of a step
nothing observes (HF's forward without a trace), an nnsight trace saving the logits, and one also saving
every layer's attention weights. The per-trace cost is the trace's median
time minus HF's, in ms. The CPU is named first::

    python -m benchmarks.nnsight_trace [--model NAME] [--rounds 3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import torch

from .harness import PERF, Block, fmt_ratio, interleave, jsonable, pooled_median, ratio, table
from .machine import machine_info


def trace_cost(model: Any, context: int = 64, rounds: int = 5, block: int = 10) -> dict:
    """Median ms of one cached one-token forward: HF's own, an nnsight trace, and a trace capturing every layer."""
    from tempo_lens.backends import backend_for
    from tempo_lens.backends.base import TempoStep

    backend = backend_for(model)
    hf, n_layers = backend.hf, int(model.cfg.n_layers)
    cache = backend.new_cache(1)
    prompt = torch.arange(1, context + 1)[None] % int(model.cfg.d_vocab)
    with torch.no_grad():
        hf(input_ids=prompt, position_ids=torch.arange(context)[None], cache=cache, use_cache=True)
    token, position = torch.tensor([[7]]), torch.tensor([[float(context)]])
    mask = torch.zeros(1, 1, 1, context + 1)

    def step(layers: tuple[int, ...]) -> TempoStep:
        return TempoStep(
            tokens=token,
            positions=torch.cat([torch.arange(context, dtype=torch.float32)[None], position], 1),
            blocked=torch.zeros(1, 1, context + 1, dtype=torch.bool),
            layers=layers,
            n_out=1,
        )

    def timed(run) -> Block:
        def go(n: int) -> list[float]:
            times = []
            for _ in range(n):
                t0 = PERF()
                with torch.no_grad():
                    run()
                times.append(PERF() - t0)
                cache.crop(-1)  # back to the context: drop the token just fed
            return times

        return go

    plain, captured = step(()), step(tuple(range(n_layers)))

    def traced() -> None:  # the plain step through a trace, as a step something observes runs
        backend._unobserved = lambda *_: False
        try:
            backend.tempo_forward(plain, cache)
        finally:
            del backend._unobserved

    variants = {
        "hf forward": timed(lambda: hf(input_ids=token, position_ids=position.long(), attention_mask=mask, cache=cache, use_cache=True)),
        "tempo direct": timed(lambda: backend.tempo_forward(plain, cache)),
        "nnsight trace": timed(traced),
        "nnsight trace + capture": timed(lambda: backend.tempo_forward(captured, cache)),
    }
    samples = interleave(variants, [list(variants)], rounds, block, warmup=2)
    ms = {name: 1000 * pooled_median(samples, name) for name in variants}
    return {
        "context": context,
        "ms": ms,
        "trace_cost_ms": ms["nnsight trace"] - ms["hf forward"],
        "direct_cost_ms": ms["tempo direct"] - ms["hf forward"],
        "ratio": ratio(samples, "nnsight trace", "hf forward"),
        "capture_ratio": ratio(samples, "nnsight trace + capture", "nnsight trace"),
    }


def format_trace_cost(result: dict) -> list[str]:
    rows = [[name, f"{value:.2f}"] for name, value in result["ms"].items()]
    return [
        f"\n[10] nnsight's fixed cost per trace: one cached one-token forward at context {result['context']}",
        table(["variant", "median ms"], rows),
        f"per-trace cost: {result['trace_cost_ms']:.2f} ms; tempo_forward without a trace (nothing observed): "
        f"{result['direct_cost_ms']:.2f} ms; trace / hf forward {fmt_ratio(result['ratio'])}; "
        f"capture / trace {fmt_ratio(result['capture_ratio'])}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from . import set_environment

    set_environment()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nnsight_trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a zoo name or folder (default: the embedded model)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="B = 1 over 4 prompts, one round")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from tempo_lens import load_model

    from .generate import format_generate, run_models, summary_rows

    info = machine_info()
    print(f"nnsight bench on {info['cpu']}, {info['cores_usable']} usable cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), load {info.get('loadavg_start')}", flush=True)
    model = load_model(args.model, backend="nnsight", device="cpu")
    cost = trace_cost(model, args.context, rounds=args.rounds or (2 if args.quick else 5))
    print("\n".join(format_trace_cost(cost)), flush=True)
    generate = run_models(model, [args.model], "nnsight", "cpu", args.quick, args.rounds, log=lambda m: print(m, flush=True))
    print("\n".join(format_generate(generate)))
    for row in summary_rows(generate):
        print(f"{row['target']}: {row['measured']} (goal {row['goal']}: {'met' if row['met'] else 'MISSED'})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(jsonable({"machine": info, "trace_cost": cost, "generate": generate}), handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
