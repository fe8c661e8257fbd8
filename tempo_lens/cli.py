"""The ``tempo-lens`` command: generate, run experiments, build the findings report.

Every deliberate error is printed as one line (``error: ...``) with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import InvalidInputError, TempoLensError

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Spinning OpenMP threads make a shared 2-core machine up to 20x slower; must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _progress(message: str) -> None:
    print(f"[tempo_lens] {message}", file=sys.stderr, flush=True)


def _text_arg(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"the {what} is not valid UTF-8; pass UTF-8 text") from None
    return value


def _threshold(text: str) -> float:
    from .schedules import check_threshold

    return check_threshold(text)


def _prune_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"--prune-threshold must be a number >= 0, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise InvalidInputError(f"--prune-threshold must be a number >= 0 (0 never prunes), got {text!r}")
    return value


def _similarity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"--prune-similarity must be a number (cosine similarity, -1..1), got {text!r}") from None
    if math.isnan(value):
        raise InvalidInputError(f"--prune-similarity must be a number (cosine similarity, -1..1), got {text!r}")
    return value


def _positive_int(name: str, minimum: int):
    def parse(text: str) -> int:
        from .generation import check_int

        try:
            value = int(text)
        except ValueError:
            raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {text!r}") from None
        return check_int(value, name, minimum)

    return parse


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import generate
    from .model import load_model
    from .pruning import AttentionPruning, SimilarityPruning
    from .schedules import ThresholdSchedule

    prompt = _text_arg(args.prompt, "prompt")
    if not prompt.strip():
        raise InvalidInputError("the prompt is empty; pass some text, e.g. tempo-lens generate \"The cat sat on the\"")
    threshold = _threshold(args.threshold)
    schedule = ThresholdSchedule.parse(threshold, args.threshold_schedule)
    max_steps = _positive_int("--max-steps", 1)(args.max_steps)
    max_parallel = _positive_int("--max-parallel", 1)(args.max_parallel)
    min_steps = _positive_int("--min-steps", 0)(args.min_steps)
    if args.prune_threshold is not None and args.prune_similarity is not None:
        raise InvalidInputError("choose one pruning strategy: --prune-threshold (attention) or --prune-similarity (hidden states)")
    pruning = AttentionPruning(_prune_threshold(args.prune_threshold)) if args.prune_threshold is not None else None
    if args.prune_similarity is not None:
        pruning = SimilarityPruning(_similarity(args.prune_similarity))
    model = load_model(args.model)
    result = generate(
        model, prompt, threshold=threshold, max_steps=max_steps, mode=args.mode, max_parallel=max_parallel,
        min_steps=min_steps, next_token_source=args.next_token_source, threshold_schedule=schedule,
        pruning=pruning, chat=args.chat, seed=args.seed,
    )
    if args.json:
        print(json.dumps(result.to_json_dict(), ensure_ascii=False))
    else:
        print(result.text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import check_can_write, load_config, parse_shard, run_experiment, save_experiment, shard_folder

    config = load_config(args.config)
    shard = parse_shard(args.shard)
    if args.model:
        config.model = args.model
    out = shard_folder(Path(args.out) if args.out else Path("runs") / config.name, shard)
    check_can_write(out, args.overwrite)  # before the run, so a refusal costs nothing
    experiment = run_experiment(config, shard=shard, progress=_progress)
    path = save_experiment(experiment, out, overwrite=args.overwrite)
    _progress(f"wrote {path}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .report.pipeline import analyze, analyze_models

    if args.models:
        if args.model or args.out or args.quick:
            raise InvalidInputError("--models runs its own models into FOLDER/models/NAME; do not combine it with --model, --out or --quick")
        analyze_models(Path(args.folder), [m.strip() for m in args.models.split(",") if m.strip()], progress=_progress,
                       overwrite=args.overwrite)
        return 0
    analyze(Path(args.folder), model=args.model, progress=_progress, quick=args.quick, overwrite=args.overwrite,
            out=Path(args.out) if args.out else None)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line like every other refusal."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tempo-lens", description="TEMPO through TransformerLens hook points")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate with TEMPO and print the bracketed text (or JSON)")
    g.add_argument("prompt")
    g.add_argument("--model", default=None, help="HF name or local directory (default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--threshold", default="0.1", help="selection threshold in (0, 1] (default 0.1)")
    g.add_argument("--threshold-schedule", default=None, help="bezier:FINAL[:P1:P2] or relu:FINAL:KNEE")
    g.add_argument("--max-steps", default="10")
    g.add_argument("--min-steps", default="0")
    g.add_argument("--mode", choices=["isolated", "visible"], default="isolated")
    g.add_argument("--max-parallel", default="8")
    g.add_argument("--next-token-source", choices=["mixture", "top", "last"], default="mixture")
    g.add_argument("--prune-threshold", default=None, help="retroactive pruning threshold >= 0 (default off)")
    g.add_argument("--prune-similarity", default=None,
                   help="prune siblings whose last-layer hidden state has cosine similarity >= X with the set's top sibling")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="run an experiment config (TOML) into a folder")
    r.add_argument("config")
    r.add_argument("--out", default=None, help="output folder (default runs/NAME)")
    r.add_argument("--shard", default=None, help="i/n: run every n-th prompt starting at i")
    r.add_argument("--model", default=None, help="override the config's model")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("analyze", help="run a folder's experiment configs (or read its saved runs) and write the findings report")
    a.add_argument("folder", nargs="?", default="analyses", help="a folder of configs (*.toml, any names) or of saved experiments")
    a.add_argument("--model", default=None, help="model name or path for every config (default: each config's own)")
    a.add_argument("--out", default=None, help="where runs/ and report/ go (default: FOLDER)")
    a.add_argument("--overwrite", action="store_true",
                   help="replace run folders and report files that analyze did not write itself (other files are always kept)")
    a.add_argument("--models", default=None,
                   help="cross-model study: comma-separated model names or `all` (the zoo); each into FOLDER/models/NAME")
    a.add_argument("--quick", action="store_true", help="run only the single-prompt configs (for smoke runs)")
    a.set_defaults(func=cmd_analyze)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TempoLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, a path through a file: the system's own words
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}; check the path and free space, then retry", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
