"""Running the chosen sections and the command line of ``make bench`` / ``python -m benchmarks``."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from . import __doc__ as PACKAGE_DOC
from .analysis import bench_analysis
from .capture import bench_capture
from .changes import bench_changes
from .config import BenchConfig
from .generate import run_models as bench_generate
from .harness import PERF, jsonable
from .linear import bench_linear, bench_stock
from .machine import load_models, loadavg, machine_info, model_info
from .overhead import bench_hf
from .parallel import bench_parallel
from .profiling import profile_overhead
from .scaling import bench_scaling
from .summary import format_report, summarize
from .sweep import bench_sweep, child_measure

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SECTIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
MODEL_SECTIONS = (1, 2, 3, 4, 5, 7, 8, 9)


def run_all(model: "TransformerBridge | None", hf: Any, cfg: BenchConfig, sections: Sequence[int] = SECTIONS,
            log: Callable[[str], None] = print, model_path: str | None = None, device: str = "cpu") -> dict:
    """Run the chosen sections; returns every number (the printable report is built from this)."""
    results: dict[str, Any] = {"config": asdict(cfg), "model": model_info(model) if model is not None else None, "sections": {}}

    def timed(name: str, fn: Callable[[], dict]) -> None:
        log(f"... {name}")
        t0 = PERF()
        out = fn()
        out["wall_s"] = PERF() - t0
        out["loadavg_after"] = loadavg()
        results["sections"][name] = out

    if 1 in sections or 2 in sections:
        timed("parallel", lambda: bench_parallel(model, cfg))
    if 1 in sections:
        timed("linear", lambda: bench_linear(model, cfg))
        timed("stock", lambda: bench_stock(model, cfg))
    if 3 in sections:
        timed("scaling", lambda: bench_scaling(model, cfg))
    if 4 in sections and hf is not None:
        timed("hf", lambda: bench_hf(model, hf, cfg))
        timed("profile", lambda: profile_overhead(model, hf, cfg))
    if 5 in sections:
        timed("capture", lambda: bench_capture(model, cfg))
    if 6 in sections:
        timed("analysis", lambda: bench_analysis(cfg))
    if 7 in sections:
        timed("sweep", lambda: bench_sweep(model, cfg, model_path, log))
    if 9 in sections:
        timed("changes", lambda: bench_changes(model, cfg))
    if 8 in sections:
        names = [model_path, *(name for name in cfg.sweep_models if name != model_path)]
        timed("generate", lambda: bench_generate(model, names, "bridge", device, cfg.brief, None, log, first_hf=hf))
    results["summary"] = summarize(results)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=PACKAGE_DOC.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run; ratios are noisier)")
    parser.add_argument("--json", metavar="PATH", help="also save every number (and the raw step times) as JSON")
    parser.add_argument("--only", metavar="LIST", help="comma-separated sections to run (1-9; 1 and 2 share one run)")
    parser.add_argument("--model", metavar="PATH", help="a local model directory instead of the embedded SmolLM2-135M")
    parser.add_argument("--device", default="cpu", help="where the model runs (default cpu; sections 1-6 are CPU studies)")
    parser.add_argument("--sweep-models", metavar="LIST", default=None,
                        help="comma-separated further models for sections 7 and 8, where installed "
                             f"(default {','.join(BenchConfig.sweep_models)}; '' for none)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--sweep-child", metavar="ARGS", help=argparse.SUPPRESS)  # one memory measurement (section 7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep_child:
        print(json.dumps(jsonable(child_measure(json.loads(args.sweep_child)))))
        return 0
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    if args.sweep_models is not None:
        cfg.sweep_models = tuple(name for name in args.sweep_models.split(",") if name)
    sections = SECTIONS if not args.only else tuple(int(x) for x in args.only.split(","))
    machine = machine_info()
    t0 = PERF()
    print(f"tempo_lens benchmark{' (--quick)' if args.quick else ''}: {machine['cpu']}, {machine['cores']} cores, "
          f"torch {machine['torch']} with {machine['torch_threads']} threads", flush=True)
    needs_model = any(x in sections for x in MODEL_SECTIONS)
    model, hf = load_models(args.model, with_hf=4 in sections, device=args.device) if needs_model else (None, None)
    results = run_all(model, hf, cfg, sections, log=lambda msg: print(msg, flush=True), model_path=args.model, device=args.device)
    results["machine"] = machine
    results["machine"]["loadavg_end"] = loadavg()
    results["total_wall_s"] = PERF() - t0
    print()
    print(format_report(results))
    print(f"\ntotal {results['total_wall_s']:.0f} s; load average at end {results['machine']['loadavg_end']}")
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(jsonable(results), handle, indent=1)
        print(f"saved {args.json}")
    return 0
