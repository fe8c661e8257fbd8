"""The ``tempo-lens`` command: generate, run experiments, build the findings report.

Every deliberate error is printed as one line (``error: ...``) with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from . import models_command
from .errors import InvalidInputError, TempoLensError

ENVIRONMENT_DEFAULTS = {
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Spinning OpenMP threads make a shared 2-core machine up to 20x slower; read when torch loads.
    "OMP_WAIT_POLICY": "PASSIVE",
}


DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def _progress(message: str) -> None:
    print(f"[tempo_lens] {message}", file=sys.stderr, flush=True)


def _text_arg(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"the {what} is not valid UTF-8; pass UTF-8 text") from None
    return value


def _number(text: str, flag: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{flag} must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{flag} must be {what}, got {text!r}")
    return value


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`GenerationConfig` setting, with its help text, plus the two pruning flags."""
    from .generation.config import GenerationConfig

    for f in dataclasses.fields(GenerationConfig):
        if not f.metadata.get("flag"):
            continue
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, choices=f.metadata.get("choices"),
                                help=f"{help_text} (default {f.default})")
    parser.add_argument("--prune-threshold", default=None,
                        help="attention pruning: collapse earlier sets scoring below X (>= 0; 0 never prunes; default off)")
    parser.add_argument("--prune-similarity", default=None,
                        help="similarity pruning: drop siblings whose last-layer hidden state has cosine similarity >= X "
                             "with their set's top sibling (default off)")


def generation_overrides(args: argparse.Namespace) -> dict:
    """The generation settings given on the command line (unset flags keep the config's values)."""
    from .generation.config import GenerationConfig, parse_setting_text
    from .pruning import AttentionPruning, SimilarityPruning

    overrides = {}
    for name in GenerationConfig.keys():
        value = getattr(args, name, None)
        if value is None:
            continue
        overrides[name] = parse_setting_text(name, value) if isinstance(value, str) else value
        try:
            GenerationConfig(**{name: overrides[name]})
        except InvalidInputError as exc:
            raise InvalidInputError(f"--{name.replace('_', '-')}: {exc}") from None
    if args.prune_threshold is not None and args.prune_similarity is not None:
        raise InvalidInputError("choose one pruning strategy: --prune-threshold (attention) or --prune-similarity (hidden states)")
    for flag, value, strategy, what in (
        ("--prune-threshold", args.prune_threshold, AttentionPruning, "a number >= 0 (0 never prunes)"),
        ("--prune-similarity", args.prune_similarity, SimilarityPruning, "a number (cosine similarity, -1..1)"),
    ):
        if value is not None:
            try:
                overrides["pruning"] = strategy(_number(value, flag, what))
            except InvalidInputError as exc:
                raise InvalidInputError(f"{flag}: {exc}" if not str(exc).startswith(flag) else str(exc)) from None
    return overrides


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import GenerationConfig, generate
    from .model import load_model

    prompt = _text_arg(args.prompt, "prompt")
    if not prompt.strip():
        raise InvalidInputError("the prompt is empty; pass some text, e.g. tempo-lens generate \"The cat sat on the\"")
    config = GenerationConfig(**generation_overrides(args))  # every setting checked before the model loads
    model = load_model(args.model, dtype=args.dtype)
    result = generate(model, prompt, config)
    if args.json:
        print(json.dumps(result.to_json_dict(), ensure_ascii=False, allow_nan=False))
    else:
        print(result.text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import check_can_write, load_config, parse_shard, run_experiment, save_experiment, shard_folder

    config = load_config(args.config).with_model(args.model, args.dtype)
    if args.batch_size is not None:
        from .generation.config import check_int

        batch_size = _number(args.batch_size, "--batch-size", "an integer >= 1")
        config = dataclasses.replace(config, batch_size=check_int(int(batch_size) if batch_size.is_integer() else batch_size, "--batch-size", 1))
    shard = parse_shard(args.shard)
    out = shard_folder(Path(args.out) if args.out else Path("runs") / config.name, shard)
    check_can_write(out, args.overwrite)  # before the run, so a refusal costs nothing
    experiment = run_experiment(config, shard=shard, progress=_progress)
    path = save_experiment(experiment, out, overwrite=args.overwrite)
    _progress(f"wrote {path}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Join the ``shard-i-of-n`` folders of ``run --shard`` into one experiment folder, written atomically."""
    from .experiment import METADATA, load_experiment, save_experiment

    folder = Path(args.folder)
    experiment = load_experiment(folder)  # every shard present, checksums verified, runs in prompt order
    if experiment.shard is not None:
        raise InvalidInputError(f"{folder} is shard {experiment.shard} of an experiment; pass the folder that holds every shard-i-of-n folder")
    if (folder / METADATA).exists():
        _progress(f"{folder} is already one experiment folder; nothing to merge")
        return 0
    out = Path(args.out) if args.out else folder
    in_place = out.resolve() == folder.resolve()
    path = save_experiment(experiment, out, overwrite=args.overwrite or in_place)
    _progress(f"merged {len(experiment.runs)} runs into {path}" + ("" if in_place else f" (shards kept in {folder})"))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .report.pipeline import analyze, analyze_models

    if args.models:
        if args.model or args.out or args.quick:
            raise InvalidInputError("--models runs its own models into FOLDER/models/NAME; do not combine it with --model, --out or --quick")
        analyze_models(Path(args.folder), [m.strip() for m in args.models.split(",") if m.strip()], progress=_progress,
                       overwrite=args.overwrite, dtype=args.dtype)
        return 0
    analyze(Path(args.folder), model=args.model, progress=_progress, quick=args.quick, overwrite=args.overwrite,
            out=Path(args.out) if args.out else None, dtype=args.dtype)
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
    g.add_argument("--model", default=None, help="zoo name, HF name or local directory (default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="weights dtype (default float32)")
    add_generation_flags(g)
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="run an experiment config (TOML) into a folder")
    r.add_argument("config")
    r.add_argument("--out", default=None, help="output folder (default runs/NAME)")
    r.add_argument("--shard", default=None, help="i/n: run every n-th prompt starting at i")
    r.add_argument("--model", default=None, help="override the config's model")
    r.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="override the config's dtype")
    r.add_argument("--batch-size", default=None, help="prompts per forward (default: what free memory allows, up to 16)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("merge", help="join the shard-i-of-n folders of `run --shard` into one experiment folder")
    m.add_argument("folder", help="the --out folder the shards were written into")
    m.add_argument("--out", default=None, help="write the merged experiment here and keep the shards (default: replace the shards)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    m.set_defaults(func=cmd_merge)

    a = sub.add_parser("analyze", help="run a folder's experiment configs (or read its saved runs) and write the findings report")
    a.add_argument("folder", nargs="?", default="analyses", help="a folder of configs (*.toml, any names) or of saved experiments")
    a.add_argument("--model", default=None, help="model name or path for every config (default: each config's own)")
    a.add_argument("--out", default=None, help="where runs/ and report/ go (default: FOLDER)")
    a.add_argument("--overwrite", action="store_true",
                   help="replace run folders and report files that analyze did not write itself (other files are always kept)")
    a.add_argument("--models", default=None,
                   help="cross-model study: comma-separated model names or `all` (the zoo); each into FOLDER/models/NAME")
    a.add_argument("--quick", action="store_true", help="run only the single-prompt configs (for smoke runs)")
    a.add_argument("--dtype", choices=DTYPE_CHOICES, default=None, help="model dtype (default float32)")
    a.set_defaults(func=cmd_analyze)
    models_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
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
