"""The ``tempo-lens`` command: generate, run experiments, build the findings report.

Every deliberate error is printed as one line (``error: ...``) with a non-zero exit status, and every
input (flags, config keys, files) is checked before the model loads where it can be. Ctrl-C (at any
moment, imports included) and SIGTERM end the command with one line and no traceback, after the
``finally`` blocks have removed any half-written folder.
"""

from __future__ import annotations

from .io.signals import Terminated, exit_quietly_on_signals, interrupts_raise, is_command_line

if is_command_line():  # first, before anything slow is imported: from here on Ctrl-C is one quiet line
    exit_quietly_on_signals()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

from . import __version__
from .errors import InvalidInputError, TempoLensError, describe  # noqa: E402
from .io.atomic import folder_lock
from .models import command as models_command

ENVIRONMENT_DEFAULTS = {
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # Spinning OpenMP threads make a shared 2-core machine up to 20x slower; read when torch loads.
    "OMP_WAIT_POLICY": "PASSIVE",
    # numpy's OpenBLAS threads, the same on small least-squares fits (the report's regression): up to 8x slower shared.
    "OPENBLAS_NUM_THREADS": "1",
}


def _progress(message: str) -> None:
    print(f"[tempo_lens] {message}", file=sys.stderr, flush=True)


def _text_arg(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"the {what} is not valid UTF-8; pass UTF-8 text") from None
    return value


def _path_arg(value: str, flag: str) -> Path:
    """A path flag: not empty, no NUL byte (undecodable bytes are fine: they name the same file)."""
    if not value.strip():
        raise InvalidInputError(f"{flag} is empty; give a path")
    if "\0" in value:
        raise InvalidInputError(f"{flag} {value!r} contains a NUL byte; give a real path")
    return Path(value)


def _model_arg(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise InvalidInputError("--model is empty; give a model name or folder, or leave the flag out")
    return value


def _number(text: str, flag: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"{flag} must be {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{flag} must be {what}, got {text!r}")
    return value


def _int_or_text(text: str) -> Any:
    """A flag's text as an integer where it reads as one (``4``, ``4.0``), else the text, for the setting's check to refuse."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else text


@contextlib.contextmanager
def _naming_flag(flag: str):
    """Refusals raised inside name ``flag`` (the setting's own check words the rest)."""
    try:
        yield
    except InvalidInputError as exc:
        raise InvalidInputError(str(exc) if str(exc).startswith(flag) else f"{flag}: {exc}") from None


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`GenerationConfig` setting, with its help text, plus the pruning flags."""
    from .generation.config import PRUNING_FLAGS, GenerationConfig  # deferred: pandas, torch (the command line starts without it)

    for f in dataclasses.fields(GenerationConfig):
        if not f.metadata.get("flag"):
            continue
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, choices=f.metadata.get("choices"), help=f"{help_text} (default {f.default})")
    for flag, (_, _, help_text) in PRUNING_FLAGS.items():
        parser.add_argument(flag, default=None, help=help_text)


def generation_overrides(args: argparse.Namespace) -> dict:
    """The generation settings given on the command line (unset flags keep the config's values)."""
    from .generation.config import (  # deferred: pandas, torch (the command line starts without it)
        PRUNING_FLAGS,
        GenerationConfig,
        parse_setting_text,
    )
    from .pruning import STRATEGIES  # deferred: torch (the command line starts without it)

    overrides = {}
    for name in GenerationConfig.keys():
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = parse_setting_text(name, value) if isinstance(value, str) else value
    try:
        GenerationConfig(**overrides)
    except InvalidInputError as exc:
        for name, value in overrides.items():  # name the flag when one value alone is the problem
            try:
                GenerationConfig(**{name: value})
            except InvalidInputError as alone:
                if str(alone) == str(exc):
                    raise InvalidInputError(f"--{name.replace('_', '-')}: {exc}") from None
        raise
    given = {flag: value for flag in PRUNING_FLAGS if (value := getattr(args, flag[2:].replace("-", "_"))) is not None}
    if len(given) > 1:
        raise InvalidInputError(
            f"choose one pruning strategy: {' or '.join(f'{f} ({PRUNING_FLAGS[f][0]})' for f in PRUNING_FLAGS)}"
        )
    for flag, value in given.items():
        strategy, what, _ = PRUNING_FLAGS[flag]
        with _naming_flag(flag):
            overrides["pruning"] = STRATEGIES[strategy](_number(value, flag, what))  # type: ignore[index]
    return overrides


def cmd_generate(args: argparse.Namespace) -> int:
    from .generation import GenerationConfig, generate  # deferred: pandas, torch (the command line starts without it)
    from .models.loading import load_model  # deferred: torch (the command line starts without it)

    prompt = _text_arg(args.prompt, "prompt")
    if not prompt.strip():
        raise InvalidInputError('the prompt is empty; pass some text, e.g. tempo-lens generate "The cat sat on the"')
    config = GenerationConfig(**generation_overrides(args))  # every setting checked before the model loads
    model = load_model(_model_arg(args.model), dtype=args.dtype, backend=args.backend)
    result = generate(model, prompt, config)
    if args.json:  # strict JSON: non-finite numbers are null (to_json_dict), non-UTF-8 terminals get \u escapes
        utf8 = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "") == "utf8"
        print(json.dumps(result.to_json_dict(), ensure_ascii=not utf8, allow_nan=False))
    else:
        print(result.text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import (  # deferred: torch (through tempo_lens.experiment)
        check_can_write,
        check_shard_target,
        load_config,
        parse_shard,
        run_experiment,
        save_experiment,
        shard_folder,
    )

    config = load_config(_path_arg(args.config, "the config path")).with_model(_model_arg(args.model), args.dtype)
    if args.batch_size is not None:  # checked where the setting is defined (ExperimentConfig)
        with _naming_flag("--batch-size"):
            config = dataclasses.replace(config, batch_size=_int_or_text(args.batch_size))
    shard = parse_shard(args.shard)
    out = shard_folder(_path_arg(args.out, "--out") if args.out is not None else Path("runs") / config.name, shard)
    if shard is not None:
        check_shard_target(out.parent, shard)
    seen = check_can_write(out, args.overwrite)  # before the run, so a refusal costs nothing
    from .experiment.runner import shard_indices  # deferred: pandas, torch (the command line starts without it)
    from .experiment.storage import save_runs  # deferred: pandas, torch (the command line starts without it)
    from .experiment.stream import STREAM_ABOVE, run_streamed  # deferred: pandas, torch (the command line starts without it)

    if len(shard_indices(len(config.prompts), shard)) > STREAM_ABOVE:  # chunks saved as they finish; a rerun resumes
        path = run_streamed(
            config,
            out,
            lambda header, groups: save_runs(header, groups, out, overwrite=args.overwrite, expect=seen),
            shard=shard,
            progress=_progress,
            allow_large=args.allow_large,
            backend=args.backend,
        )
    else:
        experiment = run_experiment(config, shard=shard, progress=_progress, allow_large=args.allow_large, backend=args.backend)
        path = save_experiment(experiment, out, overwrite=args.overwrite, expect=seen)  # refused if written meanwhile
    _progress(f"wrote {path}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Join the ``shard-i-of-n`` folders of ``run --shard`` into one experiment folder, written atomically."""
    from .experiment import (  # deferred: pandas, torch (the command line starts without it)
        METADATA,
        load_experiment,
        save_experiment,
    )

    folder = _path_arg(args.folder, "the shards folder")
    out = _path_arg(args.out, "--out") if args.out is not None else folder
    if out.resolve() != folder.resolve() and folder.resolve() in out.resolve().parents:
        raise InvalidInputError(f"--out {out} is inside {folder}; write the merged experiment outside the shards folder")

    with folder_lock(folder) if folder.is_dir() else contextlib.nullcontext():  # no shard lands while merging
        experiment = load_experiment(folder)  # exactly one split of one config, checksums verified, runs in prompt order
        if experiment.shard is not None:
            raise InvalidInputError(
                f"{folder} is shard {experiment.shard} of an experiment; pass the folder that holds every shard-i-of-n folder"
            )
        if (folder / METADATA).exists():
            _progress(f"{folder} is already one experiment folder; nothing to merge")
            return 0
        in_place = out.resolve() == folder.resolve()
        path = save_experiment(experiment, out, overwrite=args.overwrite or in_place)
    _progress(f"merged {len(experiment.runs)} runs into {path}" + ("" if in_place else f" (shards kept in {folder})"))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .app.analyze import analyze, analyze_models  # deferred: pandas, torch (the command line starts without it)

    folder = _path_arg(args.folder, "the analyses folder")
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise InvalidInputError(
            f"the analyses folder {str(folder)!r} {what}; pass a folder of experiment configs (*.toml) or saved runs"
        )
    if args.models:
        if args.model or args.out or args.quick:
            raise InvalidInputError(
                "--models runs its own models into FOLDER/models/NAME; do not combine it with --model, --out or --quick"
            )
        analyze_models(
            folder,
            [m.strip() for m in args.models.split(",") if m.strip()],
            progress=_progress,
            overwrite=args.overwrite,
            dtype=args.dtype,
            backend=args.backend,
        )
        return 0
    analyze(
        folder,
        model=_model_arg(args.model),
        progress=_progress,
        quick=args.quick,
        overwrite=args.overwrite,
        out=Path(args.out) if args.out else None,
        dtype=args.dtype,
        backend=args.backend,
        allow_large=args.allow_large,
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line like every other refusal."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .experiment.config import DTYPES  # deferred: pandas, torch (the command line starts without it)

    parser = _Parser(prog="tempo-lens", description="TEMPO through TransformerLens hook points")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate with TEMPO and print the bracketed text (or JSON)")
    g.add_argument("prompt")
    g.add_argument("--model", default=None, help="zoo name, HF name or local directory (default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--dtype", default=None, choices=DTYPES, help="weights dtype (default float32)")
    add_generation_flags(g)
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="run an experiment config (TOML) into a folder")
    r.add_argument("config")
    r.add_argument("--out", default=None, help="output folder (default runs/NAME)")
    r.add_argument("--shard", default=None, help="i/n: run every n-th prompt starting at i")
    r.add_argument("--model", default=None, help="override the config's model")
    r.add_argument("--dtype", default=None, choices=DTYPES, help="override the config's dtype")
    r.add_argument("--batch-size", default=None, help="prompts per forward (default: what free memory allows, up to 16)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    r.add_argument(
        "--allow-large",
        action="store_true",
        help="run past the bounds (more than 2,000 runs, or attention beyond half the free memory)",
    )
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("merge", help="join the shard-i-of-n folders of `run --shard` into one experiment folder")
    m.add_argument("folder", help="the --out folder the shards were written into")
    m.add_argument(
        "--out", default=None, help="write the merged experiment here and keep the shards (default: replace the shards)"
    )
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    m.set_defaults(func=cmd_merge)

    a = sub.add_parser("analyze", help="run a folder's experiment configs (or read its saved runs) and write the findings report")
    a.add_argument(
        "folder", nargs="?", default="analyses", help="a folder of configs (*.toml, any names) or of saved experiments"
    )
    a.add_argument("--model", default=None, help="model name or path for every config (default: each config's own)")
    a.add_argument("--out", default=None, help="where runs/ and report/ go (default: FOLDER)")
    a.add_argument(
        "--overwrite",
        action="store_true",
        help="replace run folders and report files that analyze did not write itself (other files are always kept)",
    )
    a.add_argument(
        "--models",
        default=None,
        help="cross-model study: comma-separated model names or `all` (the zoo); each into FOLDER/models/NAME",
    )
    a.add_argument("--quick", action="store_true", help="run only the single-prompt configs (for smoke runs)")
    a.add_argument(
        "--allow-large",
        action="store_true",
        help="run configs past the bounds (more than 2,000 runs, or attention beyond half the free memory)",
    )
    a.add_argument("--dtype", choices=DTYPES, default=None, help="model dtype (default float32)")
    a.set_defaults(func=cmd_analyze)
    models_command.add_parser(sub)
    from .backends import BACKENDS  # deferred: torch (the command line starts without it)

    for command in (g, r, a):
        command.add_argument(
            "--backend",
            default="bridge",
            choices=BACKENDS,
            help="model class: bridge (TransformerBridge, default), hooked (HookedTransformer, TransformerLens 3.x) "
            "or nnsight (nnsight LanguageModel, the extra tempo_lens[nnsight])",
        )
    for command in sub.choices.values():
        command.add_argument(
            "--no-fast",
            action="store_true",
            default=argparse.SUPPRESS,
            help="load models with the stock TransformerBridge paths (sets TEMPO_LENS_FAST=0)",
        )
    return parser


def _dispatch(argv: Sequence[str] | None) -> int:
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    parser = build_parser()  # imports the generation settings (and torch)
    args = parser.parse_args(argv)
    try:
        with _environment({"TEMPO_LENS_FAST": "0"} if getattr(args, "no_fast", False) else {}):
            return int(args.func(args) or 0)
    except TempoLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`| head`): nothing more to say
        _quiet_stdout()
        return 1
    except OSError as exc:  # disk full, permission denied, a path through a file: the system's own words, and the path
        print(f"error: {describe(exc)}; check the path and free space, then retry", file=sys.stderr)
        return 2
    except MemoryError:
        fix = (
            "lower max_parallel, max_steps or --batch-size, or use a smaller model"
            if args.command in ("generate", "run")
            else "free memory or use a machine with more; saved files are checked against their size before they are read"
        )
        print(f"error: out of memory during `{args.command}`; {fix}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for one command, then put back what was there (``main`` may run in-process)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _quiet_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; ``argv`` None reads ``sys.argv`` (the installed ``tempo-lens`` and ``python -m``).

    As the program, Ctrl-C and SIGTERM end it at once with one line, except inside a write, where they
    raise so the half-written folder is removed first (:mod:`tempo_lens.io.signals`). Called in-process
    with ``argv``, KeyboardInterrupt (and SIGTERM, while the command runs) becomes one line and 130 / 143.
    """
    program = argv is None
    if program:
        exit_quietly_on_signals()
        for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a token gets an escape, not a crash
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
    try:
        with contextlib.nullcontext() if program else interrupts_raise():
            return _dispatch(argv)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; nothing half-written was left behind", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
