"""Section 8, against plain Hugging Face generation: TEMPO steps/s beside ``hf.generate`` on the same weights.

What a researcher would otherwise run is HF ``generate``. Every variant runs the same prompts for exactly
S steps (``min_steps = max_steps`` for TEMPO, ``min_new_tokens = max_new_tokens`` for HF), once per round,
side by side in rotated order (:func:`harness.interleave`); ratios are paired per round.

Variants, at B = 1 (one prompt at a time) and B = 16 (one batch; HF left-pads, ``generate_batch`` packs):

- ``hf eager`` / ``hf sdpa``: ``hf.generate``, greedy, on one HF model switched between attention kernels;
- ``tempo``: ``generate`` / ``generate_batch`` with the sweep's settings (threshold 0.1, isolated): the
  hooks, the bookkeeping and every sibling;
- ``tempo k=1``: the same at threshold 1, so every step keeps one token, like-for-like with a greedy step;
- ``tempo capture``: the ``tempo`` variant with every layer's pattern captured.

A step is a logical position (HF: one new token); TEMPO steps also feed their siblings (tokens/s). The
backend is the bridge unless ``--backend hooked`` (``make bench`` runs that in ``.venv-tl3``)::

    python -m benchmarks.generate [--model NAME] [--backend hooked] [--device cuda] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .harness import PERF, Block, fmt_ratio, interleave, jsonable, pooled_median, section_models, ratio, table
from .machine import machine_info

GOALS = {"tempo / hf eager": 1.0, "capture / tempo": 1.2}   # steps/s ratio at least; cost ratio at most
VARIANTS = ("hf eager", "hf sdpa", "tempo", "tempo k=1", "tempo capture")


@dataclass
class GenerateBenchConfig:
    """How much section 8 measures on one model."""

    prompts: int = 16          # B = 16 runs them as one batch
    prompts_b1: int = 16       # B = 1 runs the first this many, one at a time
    steps: int = 10
    rounds: int = 3
    threshold: float = 0.1
    mode: str = "isolated"

    @classmethod
    def quick(cls) -> "GenerateBenchConfig":
        return cls(prompts_b1=4, rounds=1)

    @classmethod
    def large(cls) -> "GenerateBenchConfig":
        """For a model ten times the default's size on a CPU: fewer prompts one at a time, two rounds."""
        return cls(prompts_b1=4, rounds=2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_runner(hf: Any, tokenizer: Any, prompts: Sequence[str], steps: int, attention: str) -> Callable[[], tuple[int, int]]:
    """One pass of greedy ``hf.generate`` over ``prompts`` as one left-padded batch; returns (steps, tokens) made (equal)."""
    device = next(hf.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)

    def run() -> tuple[int, int]:
        hf.set_attn_implementation(attention)
        out = hf.generate(**encoded, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=pad,
                          temperature=None, top_p=None, top_k=None)
        made = (out.shape[1] - encoded["input_ids"].shape[1]) * len(prompts)
        return made, made

    return run


def tempo_runner(model: Any, prompts: Sequence[str], settings: dict) -> Callable[[], tuple[int, int]]:
    """One pass of ``generate`` (one prompt) or ``generate_batch`` (several); returns (steps, tokens) made."""
    from tempo_lens.generation import generate, generate_batch

    def run() -> tuple[int, int]:
        if len(prompts) == 1:
            results = [generate(model, prompts[0], progress=False, **settings)]
        else:
            results = generate_batch(model, list(prompts), batch_size=len(prompts), progress=False, **settings)
        return (sum(r.layout.n_steps for r in results), sum(len(r.layout) - r.layout.n_prompt for r in results))

    return run


def _block(passes: list[Callable[[], tuple[int, int]]], device: torch.device, made: dict, name: str) -> Block:
    """Each timed sample runs every pass once (B = 1: one per prompt); ``made[name]`` keeps the last counts."""

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            _sync(device)
            t0 = PERF()
            counts = [p() for p in passes]
            _sync(device)
            times.append(PERF() - t0)
            made[name] = counts
        return times

    return run


def bench_generate_model(model: Any, hf: Any, tokenizer: Any, cfg: GenerateBenchConfig, log: Callable[[str], None] = print) -> dict:
    """Section 8 on one model (a loaded tempo_lens model and HF's on the same weights)."""
    from .sweep import sweep_prompts

    device = next(hf.parameters()).device
    prompts = sweep_prompts(cfg.prompts)
    settings = {"threshold": cfg.threshold, "mode": cfg.mode, "max_steps": cfg.steps, "min_steps": cfg.steps}
    per_variant = {
        "hf eager": lambda ps: hf_runner(hf, tokenizer, ps, cfg.steps, "eager"),
        "hf sdpa": lambda ps: hf_runner(hf, tokenizer, ps, cfg.steps, "sdpa"),
        "tempo": lambda ps: tempo_runner(model, ps, settings),
        "tempo k=1": lambda ps: tempo_runner(model, ps, {**settings, "threshold": 1.0}),
        "tempo capture": lambda ps: tempo_runner(model, ps, {**settings, "capture": True}),
    }
    made: dict[str, list] = {}
    variants: dict[str, Block] = {}
    for name, make in per_variant.items():
        variants[f"{name} B=1"] = _block([make([p]) for p in prompts[: cfg.prompts_b1]], device, made, f"{name} B=1")
        variants[f"{name} B={cfg.prompts}"] = _block([make(prompts)], device, made, f"{name} B={cfg.prompts}")
    groups = [[f"{name} B={b}" for name in VARIANTS] for b in (1, cfg.prompts)]
    log(f"... section 8: {len(variants)} variants x {cfg.rounds} rounds")
    samples = interleave(variants, groups, cfg.rounds, 1, warmup=1)
    rows = []
    for b, n_prompts in ((1, cfg.prompts_b1), (cfg.prompts, cfg.prompts)):
        for name in VARIANTS:
            key = f"{name} B={b}"
            seconds = pooled_median(samples, key)
            steps, tokens = (sum(column) for column in zip(*made[key]))
            rows.append({"variant": name, "batch": b, "prompts": n_prompts, "seconds": seconds, "steps": steps,
                         "tokens": tokens, "steps_per_s": steps / seconds, "tokens_per_s": tokens / seconds})
    ratios = _ratios(samples, cfg.prompts)
    return {"device": str(device), "prompts": cfg.prompts, "prompts_b1": cfg.prompts_b1, "steps": cfg.steps,
            "rounds": cfg.rounds, "settings": settings, "rows": rows, "ratios": ratios, "samples": samples}


def _ratios(samples: Any, big: int) -> dict:
    """Paired ratios: TEMPO steps/s over HF's (HF pass time / TEMPO pass time), and capture's extra cost."""
    out = {}
    for b in (1, big):
        for hf in ("hf eager", "hf sdpa"):
            for tempo in ("tempo", "tempo k=1"):
                out[f"{tempo} / {hf} steps/s, B={b}"] = ratio(samples, f"{hf} B={b}", f"{tempo} B={b}")
        out[f"tempo capture / tempo cost, B={b}"] = ratio(samples, f"tempo capture B={b}", f"tempo B={b}")
    return out


def format_generate(result: dict) -> list[str]:
    out, models = section_models("\n[8] against plain HF generate: steps/s on the same weights, same prompts, exactly S steps each",
                                 result)
    for m in models:
        s = m["settings"]
        out.append(f"{m['name']} ({m['backend']}) on {m['device']}: B=1 over {m['prompts_b1']} prompts one at a time, "
                   f"B={m['prompts']} as one batch; {m['steps']} steps; tempo: threshold {s['threshold']}, mode {s['mode']}; "
                   f"{m['rounds']} rounds; {'; '.join(m.get('paths') or ['stock paths'])}")
        out.append(table(["variant", "B", "pass s", "steps/s", "tokens/s"],
                         [[r["variant"], r["batch"], f"{r['seconds']:.2f}", f"{r['steps_per_s']:.1f}",
                           f"{r['tokens_per_s']:.1f}"] for r in m["rows"]]))
        out.append(table(["paired ratio", "value [quartiles; fastest]", "goal"],
                         [[name, fmt_ratio(r), _goal(name)] for name, r in m["ratios"].items()]))
    out.append("steps/s ratios are HF pass time / TEMPO pass time (>= 1: TEMPO makes steps at least as fast); "
               "'tempo' keeps every token above the threshold, 'tempo k=1' one per step")
    return out


def _goal(name: str) -> str:
    if name.startswith("tempo / hf eager"):
        return f">= {GOALS['tempo / hf eager']:.2f}x"
    if name.startswith("tempo capture"):
        return f"<= {GOALS['capture / tempo']:.2f}x"
    return "report"


def summary_rows(result: dict) -> list[dict]:
    """One summary row per goal and model, for :mod:`benchmarks.summary`."""
    rows: list[dict] = []
    for m in result.get("models", []):
        if "skipped" in m:
            continue
        for name, r in m["ratios"].items():
            goal = _goal(name)
            if goal == "report":
                continue
            value = r["ratio"]
            met = value >= GOALS["tempo / hf eager"] if goal.startswith(">=") else value <= GOALS["capture / tempo"]
            rows.append({"target": f"8 {m['name']} ({m['backend']}): {name}", "goal": goal, "measured": f"{value:.2f}x",
                         "value": value, "met": met})
    return rows


def load_hf(model_name: str | None, device: str) -> tuple[Any, Any]:
    """HF's model (fp32, eager to start) and tokenizer from the folder the tempo_lens model loads from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tempo_lens.models.loading import _resolve

    folder = _resolve(model_name or "smollm2-135m")
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).to(device).eval()
    return hf, AutoTokenizer.from_pretrained(folder)


def bench_generate(model: Any, cfg: GenerateBenchConfig, model_name: str | None, device: str, backend: str,
                   log: Callable[[str], None] = print, hf: Any = None) -> dict:
    """Section 8 on ``model`` (already loaded), beside ``hf`` (the same weights; loaded from ``model_name`` when None)."""
    from tempo_lens.backends.bridge.fast_paths import fast_paths_on
    from tempo_lens.backends.hooked.weight_layout import weights_stored_as_read

    if hf is None:
        hf, tokenizer = load_hf(model_name, device)
    else:
        tokenizer = model.tokenizer
    try:
        result = bench_generate_model(model, hf, tokenizer, cfg, log)
    finally:
        del hf
        gc.collect()
    stored = weights_stored_as_read(model) if backend == "hooked" else 0
    paths = fast_paths_on(model) if backend == "bridge" else [f"weights stored as read ({stored} modules)"] if stored else []
    return {"name": model_name or "smollm2-135m", "backend": backend, "paths": paths, **result}


def run_models(first: Any, names: Sequence[str | None], backend: str, device: str, quick: bool, rounds: int | None,
               log: Callable[[str], None] = print, first_hf: Any = None) -> dict:
    """Section 8 on each model that loads (``first``: the first one, already loaded, with ``first_hf`` beside it), one at a time."""
    from tempo_lens import generation, load_model
    from tempo_lens.errors import TempoLensError

    if not hasattr(generation, "generate_batch"):
        return {"skipped": "tempo_lens.generation.generate_batch does not exist; section 8 needs it"}
    models = []
    for i, name in enumerate(names):
        log(f"... section 8: {name or 'smollm2-135m'} ({backend})")
        model = first if i == 0 and first is not None else None
        if model is None:
            try:
                model = load_model(name, backend=backend, device=device)
            except TempoLensError as exc:
                models.append({"name": name, "skipped": f"not installed ({str(exc).splitlines()[0]})"})
                continue
        cfg = GenerateBenchConfig.quick() if quick else (GenerateBenchConfig() if i == 0 else GenerateBenchConfig.large())
        if rounds:
            cfg.rounds = rounds
        models.append(bench_generate(model, cfg, name, device, backend, log, first_hf if i == 0 else None))
        del model
        gc.collect()
    return {"models": models}


def main(argv: Sequence[str] | None = None) -> int:
    from . import set_environment

    set_environment()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",qwen2.5-1.5b",
                        help="comma-separated models ('' = the embedded default; default: it and qwen2.5-1.5b where installed)")
    parser.add_argument("--backend", default="bridge", choices=("bridge", "hooked"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    info = machine_info()
    print(f"section 8 on {info['cpu']}, {info['cores_usable']} usable cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), transformers {info['transformers']}, TransformerLens {info['transformer_lens']}",
          flush=True)
    names = [name or None for name in args.models.split(",")]
    result = run_models(None, names, args.backend, args.device, args.quick, args.rounds, log=lambda m: print(m, flush=True))
    result["machine"] = info
    print("\n".join(format_generate(result)))
    for row in summary_rows(result):
        print(f"{row['target']}: {row['measured']} (goal {row['goal']}: {'met' if row['met'] else 'MISSED'})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(jsonable(result), handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
