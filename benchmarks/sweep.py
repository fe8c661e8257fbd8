"""Section 7, the throughput sweep: N prompts x S steps, one at a time against batches of B.

For each model (the benchmark's own, then each of ``sweep_models`` that is installed), the variants
"one at a time" (``generate`` per prompt) and ``batch_B`` (``generate_batch`` over chunks of B prompts)
each run the whole prompt set once per round, side by side in rotated order (:func:`harness.interleave`).
Reported: generated tokens (and steps) per second, the speed-up over one at a time, batched B = 1
against ``generate`` (paired prompt by prompt, ``sweep_rounds`` passes), the cost of one batched
forward, whether every row equals ``generate``'s result, and peak memory per batch size (each in a
fresh process, :mod:`benchmarks.memory`). Every prompt runs
exactly S steps (``min_steps = max_steps``), so every variant does the same work.

Runs where ``tempo_lens.generation.generate_batch`` exists; until then it reports itself skipped.
Alone (for example on a GPU machine)::

    python -m benchmarks --only 7 [--device cuda] [--sweep-models qwen2.5-1.5b] [--json PATH]
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .config import TARGETS, BenchConfig
from .harness import PERF, Block, fmt_ratio, interleave, paths_label, pooled_median, section_models, ratio, table
from .memory import peak, reset_peak, rss_mb, run_child
from .steps import device_of

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MISSING = "tempo_lens.generation.generate_batch does not exist yet; the sweep runs once it does"
PROMPTS_FILE = Path(__file__).resolve().parents[1] / "analyses" / "prompts.txt"
EXTRA_PROMPTS = ("The train left the station at", "Her favourite book was written by", "The river flows through the")
ONE = "one_at_a_time"


def batch_generator() -> Callable | None:
    """``tempo_lens.generation.generate_batch`` where it exists."""
    from tempo_lens import generation

    return getattr(generation, "generate_batch", None)


def sweep_prompts(n: int) -> list[str]:
    """The study's prompts (``analyses/prompts.txt``), topped up to ``n`` with a few more."""
    lines = PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if PROMPTS_FILE.is_file() else []
    prompts = [line.strip() for line in lines if line.strip() and not line.startswith("#")] + list(EXTRA_PROMPTS)
    return [prompts[i % len(prompts)] for i in range(n)]


def sweep_settings(cfg: BenchConfig) -> dict:
    return {"mode": cfg.mode, **cfg.sweep_settings, "max_steps": cfg.sweep_steps, "min_steps": cfg.sweep_steps}


def run_prompts(model: "TransformerBridge", prompts: Sequence[str], batch: int, settings: dict) -> list:
    """One result per prompt: ``generate`` one at a time (``batch`` 0) or ``generate_batch`` in chunks of ``batch``."""
    if batch == 0:
        from tempo_lens.generation import generate

        return [generate(model, prompt, **settings) for prompt in prompts]
    generate_batch = batch_generator()
    return [r for i in range(0, len(prompts), batch) for r in generate_batch(model, list(prompts[i:i + batch]), **settings)]


def _variant_name(batch: int) -> str:
    return ONE if batch == 0 else f"batch_{batch}"


def _pass_block(model: "TransformerBridge", prompts: Sequence[str], batch: int, settings: dict, keep: dict) -> Block:
    """n timed passes over every prompt; the last pass's results are kept in ``keep[variant]``."""

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = PERF()
            keep[_variant_name(batch)] = run_prompts(model, prompts, batch, settings)
            times.append(PERF() - t0)
        return times

    return run


def _prompt_block(model: "TransformerBridge", prompts: Sequence[str], batch: int, settings: dict) -> Block:
    """One prompt per timed run, the next one each time (variants called in step see the same prompt)."""
    state = {"next": 0}

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            prompt = prompts[state["next"] % len(prompts)]
            state["next"] += 1
            t0 = PERF()
            run_prompts(model, [prompt], batch, settings)
            times.append(PERF() - t0)
        return times

    return run


def batch1_over_generate(model: "TransformerBridge", prompts: Sequence[str], settings: dict, rounds: int) -> dict:
    """``generate_batch`` with B = 1 against ``generate``, paired prompt by prompt (whole passes vary too much)."""
    variants = {ONE: _prompt_block(model, prompts, 0, settings), "batch_1": _prompt_block(model, prompts, 1, settings)}
    samples = interleave(variants, [(ONE, "batch_1")], rounds * len(prompts), 1, warmup=1)
    return ratio(samples, "batch_1", ONE)


def _generated(results: list) -> tuple[int, int]:
    """(steps, generated tokens) over the results: logical positions, and every sibling."""
    return (sum(r.layout.n_steps for r in results),
            sum(len(r.layout) - r.layout.n_prompt for r in results))


def _rows(samples, batches: Sequence[int], prompts: Sequence[str], keep: dict, steps: int) -> list[dict]:
    reference = [r.layout.token_ids for r in keep[ONE]]
    rows = []
    for batch in batches:
        name = _variant_name(batch)
        seconds = pooled_median(samples, name)
        n_steps, n_tokens = _generated(keep[name])
        chunks = len(prompts) if batch == 0 else -(-len(prompts) // batch)
        rows.append({
            "variant": name, "batch": batch, "seconds": seconds, "steps": n_steps, "tokens": n_tokens,
            "steps_per_s": n_steps / seconds, "tokens_per_s": n_tokens / seconds,
            "ms_per_forward": 1e3 * seconds / (chunks * steps),   # one batched decode step, prefill amortised
            "speedup": ratio(samples, ONE, name) if batch else None,
            "rows_differing_from_generate": sum(r.layout.token_ids != ref for r, ref in zip(keep[name], reference)),
        })
    return rows


def sweep_model(model: "TransformerBridge", cfg: BenchConfig, model_path: str | None = None) -> dict:
    """The sweep on one loaded model; the memory children (fresh processes) load ``model_path`` themselves."""
    from .machine import model_info

    prompts = sweep_prompts(cfg.sweep_prompts)
    settings = sweep_settings(cfg)
    batches = [0, *cfg.sweep_batch_sizes]
    keep: dict[str, list] = {}
    variants = {_variant_name(b): _pass_block(model, prompts, b, settings, keep) for b in batches}
    for batch in batches:   # warm-up: the first chunk, one step
        run_prompts(model, prompts[:max(1, batch)], batch, {**settings, "max_steps": 1, "min_steps": 1})
    samples = interleave(variants, [tuple(variants)], cfg.sweep_rounds, 1, warmup=0)
    rows = _rows(samples, batches, prompts, keep, cfg.sweep_steps)
    return {
        "model": model_info(model), "model_path": model_path, "device": str(device_of(model)), "prompts": len(prompts),
        "steps": cfg.sweep_steps, "settings": settings, "rows": rows,
        "batch1_over_generate": batch1_over_generate(model, prompts, settings, cfg.sweep_rounds) if 1 in cfg.sweep_batch_sizes else None,
        "samples": samples,
    }


def add_memory(result: dict, cfg: BenchConfig, log: Callable[[str], None] = print) -> None:
    """Peak memory per batch size, each in a fresh process that loads the model and runs the first chunk once."""
    prompts = sweep_prompts(cfg.sweep_prompts)
    for row in result["rows"]:
        log(f"... sweep memory: {result['model']['name']}, {row['variant']}")
        spec = {"model": result["model_path"], "device": result["device"], "batch": row["batch"],
                "prompts": prompts[:max(1, row["batch"])], "settings": result["settings"],
                "paths": result["model"]["fast_paths"]}
        row["memory"] = run_child(["--sweep-child", json.dumps(spec)])


def child_measure(spec: dict) -> dict:
    """In the child: load the model, reset the peak, run one chunk, report peak memory and the time taken."""
    import torch

    from tempo_lens import load_model

    if spec["batch"] and batch_generator() is None:
        return {"skipped": MISSING}
    model = load_model(spec["model"], device=spec["device"], fast=False)
    match_paths(model, spec.get("paths", []))
    device = torch.device(spec["device"])
    gc.collect()
    before = rss_mb()
    method = reset_peak(device)
    t0 = PERF()
    results = run_prompts(model, spec["prompts"], spec["batch"], spec["settings"])
    seconds = PERF() - t0
    return {**peak(device, before), "method": method, "seconds": seconds, "tokens": _generated(results)[1]}


def match_paths(model: "TransformerBridge", paths: Sequence[str]) -> None:
    """Switch on the fast paths the parent's model ran with (the default may differ with the free memory)."""
    from tempo_lens.backends.bridge.cpu_linears import install_prepacked_linears
    from tempo_lens.backends.bridge.fast_norms import skip_unobserved_norm_statistics

    if any(p.startswith("fast norms") for p in paths):
        skip_unobserved_norm_statistics(model)
    if any(p.startswith("prepacked linears") for p in paths):
        install_prepacked_linears(model)


def bench_sweep(model: "TransformerBridge", cfg: BenchConfig, model_path: str | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Section 7 on the benchmark's model, then on each installed model of ``cfg.sweep_models`` (one at a time)."""
    from tempo_lens import load_model
    from tempo_lens.errors import TempoLensError

    if batch_generator() is None:
        return {"skipped": MISSING}
    models = []
    first = sweep_model(model, cfg, model_path)
    if cfg.sweep_memory:
        add_memory(first, cfg, log)
    models.append(first)
    for name in cfg.sweep_models:
        if name == model_path:
            continue
        log(f"... sweep: {name}")
        try:
            other = load_model(name, device=str(device_of(model)))
        except TempoLensError as exc:
            models.append({"name": name, "skipped": f"not installed ({exc})"})
            continue
        result = sweep_model(other, cfg, name)
        del other   # never two large models at once: the memory children load it again
        gc.collect()
        if cfg.sweep_memory:
            add_memory(result, cfg, log)
        models.append(result)
    return {"models": models}


def format_sweep(sw: dict) -> list[str]:
    out, models = section_models("\n[7] throughput sweep: prompts x steps, one at a time (generate) vs generate_batch in chunks of B", sw)
    for m in models:
        s = m["settings"]
        out.append(f"{m['model']['name']} on {m['device']}: {m['prompts']} prompts x {m['steps']} steps, "
                   f"threshold {s.get('threshold')}, mode {s.get('mode')}; default settings, "
                   f"{paths_label(m['model'].get('fast_paths', []))}")
        out.append(table(
            ["variant", "pass s", "steps/s", "tokens/s", "speed-up", "ms/forward", "rows != generate", "peak RSS MB", "rise MB"],
            [[r["variant"], f"{r['seconds']:.2f}", f"{r['steps_per_s']:.1f}", f"{r['tokens_per_s']:.1f}",
              "-" if r["speedup"] is None else f"{r['speedup']['ratio']:.2f}x", f"{r['ms_per_forward']:.1f}",
              r["rows_differing_from_generate"], *_memory_cells(r.get("memory"))] for r in m["rows"]]))
        if m["batch1_over_generate"]:
            out.append(f"generate_batch B=1 / generate, paired prompt by prompt ({m['batch1_over_generate']['rounds']} pairs): "
                       f"{fmt_ratio(m['batch1_over_generate'])} (goal <= {TARGETS['sweep_batch1']:.2f}x)")
    out.append("speed-up = paired ratio of pass times; ms/forward = pass time / (chunks x steps): near B x the B=1 "
               "figure means compute-bound, near 1 x means overhead- or bandwidth-bound")
    return out


def _memory_cells(memory: dict | None) -> list[str]:
    if not memory:
        return ["-", "-"]
    if "peak_rss_mb" not in memory:   # the full message is in the JSON
        return ["skipped" if "skipped" in memory else f"failed: {memory.get('error', '?')[:40]}", "-"]
    cuda = f" (cuda {memory['cuda_peak_mb']:.0f})" if "cuda_peak_mb" in memory else ""
    return [f"{memory['peak_rss_mb']:.0f}{cuda}", f"{memory['peak_rise_mb']:.0f}"]
