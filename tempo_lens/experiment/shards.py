"""Shards: the ``shard-i-of-n`` folders of ``run --shard i/n``, checked to be exactly one split of one config.

A merge refuses anything else, naming what is wrong: folders that are not shards, a folder whose
``shard`` field is not its name, splits of different sizes (``shard-0-of-2`` beside ``shard-1-of-3``),
a shard present twice or missing, shards of another config or model, and runs that are not the
prompts their shard should hold (prompt ``p`` belongs to shard ``p mod n``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import ExperimentFileError, InvalidInputError
from .storage import METADATA, SHARD_NAME, Experiment, recover_interrupted_overwrite

MAX_SHARDS = 10_000


def shard_numbers(text: object) -> tuple[int, int] | None:
    """``"i/n"`` (spaces allowed) as ``(i, n)``, unchecked; None when the text is not of that form."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text) if isinstance(text, str) else None
    return None if match is None else (int(match[1]), int(match[2]))


def shard_problem(index: int, count: int) -> str | None:
    """What is wrong with shard ``index`` of ``count`` (None: ``0 <= i < n <= MAX_SHARDS``)."""
    if count < 1 or not 0 <= index < count:
        return "need 0 <= i < n (e.g. 0/4 .. 3/4)"
    return f"at most {MAX_SHARDS} shards; use fewer" if count > MAX_SHARDS else None


def parse_shard_text(text: object, where: str) -> tuple[int, int]:
    """A stored ``"i/n"`` as ``(i, n)`` with ``0 <= i < n <= MAX_SHARDS``, or a clear error."""
    numbers = shard_numbers(text)
    if numbers is None:
        raise ExperimentFileError(
            f"{where} is not a shard (its shard field is {text!r}); merge only the shard-i-of-n folders of one `run --shard` split"
        )
    if shard_problem(*numbers):
        raise ExperimentFileError(f"{where} has an impossible shard field {text!r}; re-run that shard")
    return numbers


def shard_folders(directory: Path) -> list[Path]:
    """The ``shard-i-of-n`` folders of ``directory`` (none when it is one experiment folder), name-checked.

    Backups left by an interrupted overwrite of a shard are put back first. Hidden entries (temporary
    folders of running writes) are skipped; any other folder, or a non-folder named like a shard, is refused.
    """
    if not directory.is_dir() or (directory / METADATA).exists():
        if directory.is_dir() and any(SHARD_NAME.fullmatch(p.name) for p in directory.iterdir()):
            raise ExperimentFileError(
                f"{directory} holds both a merged experiment ({METADATA}) and shard-i-of-n folders; move the shard "
                "folders elsewhere, or remove the merged files and run `tempo-lens merge` again"
            )
        return []
    for backup in directory.glob(".shard-*-of-*.old-*"):
        name = backup.name[1:].split(".old-")[0]
        if SHARD_NAME.fullmatch(name):
            recover_interrupted_overwrite(directory / name)
    shards, stray = [], []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if SHARD_NAME.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shards.append(entry)
        elif entry.is_dir() or entry.name.startswith("shard"):
            stray.append(entry.name)
    if stray and shards:
        raise ExperimentFileError(
            f"{directory} holds {', '.join(repr(s) for s in stray[:5])} beside its shard folders; only shard-i-of-n "
            "folders of one split belong there. Move the others elsewhere, then merge again"
        )
    return sorted(shards, key=lambda p: tuple(int(g) for g in SHARD_NAME.fullmatch(p.name).groups()))


def check_shard_target(out: Path, shard: tuple[int, int]) -> None:
    """Refuse, before a shard runs, an ``--out`` that could never merge: a merged experiment, another split, strays."""
    if not out.is_dir():
        return
    if (out / METADATA).exists():
        raise ExperimentFileError(f"{out} holds a merged experiment, not shard folders; choose another --out for the shards")
    others = sorted(p.name for p in out.iterdir() if (m := SHARD_NAME.fullmatch(p.name)) and int(m[2]) != shard[1])
    if others:
        raise ExperimentFileError(
            f"{out} already holds shards of another split ({', '.join(others[:3])}); a merge needs one split. "
            "Move them away or choose another --out"
        )
    shard_folders(out)  # refuses stray folders beside existing shards


def _label(part: Experiment, k: int) -> str:
    return part.path.name if part.path is not None else f"part {k}"


def _differences(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in keys if a.get(key) != b.get(key)]


def _check_folder_names(parts: Sequence[Experiment], ids: list[tuple[int, int]]) -> None:
    for part, (index, count) in zip(parts, ids):
        if part.path is not None and SHARD_NAME.fullmatch(part.path.name) and part.path.name != f"shard-{index}-of-{count}":
            raise ExperimentFileError(
                f"{part.path} holds shard {index}/{count}, not the shard its name says; it was renamed or copied. "
                f"Move it back to shard-{index}-of-{count} or re-run that shard"
            )


def _check_runs(parts: Sequence[Experiment], ids: list[tuple[int, int]]) -> None:
    """Each shard holds exactly its prompts (``p mod n == i``) in every mode, and every prompt is held once."""
    config = parts[0].config
    n_prompts, modes = len(config.get("prompts") or []), list(config.get("modes") or [])
    seen: Counter = Counter()
    for k, (part, (index, count)) in enumerate(zip(parts, ids)):
        for run in part.generated():
            prompt = run.meta.get("prompt_index")
            if not isinstance(prompt, int) or prompt % count != index:
                raise ExperimentFileError(
                    f"{_label(part, k)} holds run {run.name!r} of prompt {prompt!r}, which belongs to another shard; re-run that shard"
                )
            seen[(prompt, run.mode)] += 1
    expected = Counter({(p, m): 1 for p in range(n_prompts) for m in modes})
    if seen != expected:
        missing = sorted(set(expected) - set(seen))
        extra = sorted(key for key in seen if seen[key] != expected.get(key))
        raise ExperimentFileError(
            f"the shards do not hold every (prompt, mode) of the config once (missing {missing[:5]}, "
            f"unexpected or repeated {extra[:5]}); re-run the affected shards"
        )


def merge_experiments(parts: Sequence[Experiment], path: Path | None = None) -> Experiment:
    """Join the shards of one split of one experiment (same config and model), each present exactly once."""
    if isinstance(parts, (str, bytes, Path)) or not isinstance(parts, Sequence) or not parts:
        raise InvalidInputError("merge_experiments needs a non-empty list of shard experiments (from load_experiment)")
    for k, part in enumerate(parts):
        if not isinstance(part, Experiment):
            raise InvalidInputError(f"merge_experiments: item {k} is a {type(part).__name__}, not an Experiment")
    ids = [parse_shard_text(part.shard, _label(part, k)) for k, part in enumerate(parts)]
    _check_folder_names(parts, ids)
    counts = sorted({count for _, count in ids})
    if len(counts) > 1:
        by_count = ", ".join(f"{_label(p, k)} is {i}/{n}" for k, (p, (i, n)) in enumerate(zip(parts, ids)))
        raise ExperimentFileError(
            f"the shards come from splits of different sizes ({by_count}); merge the shards of one `run --shard i/N` "
            "split only, and move the others elsewhere"
        )
    count = counts[0]
    repeated = sorted(i for i, n in Counter(i for i, _ in ids).items() if n > 1)
    if repeated:
        holders = [_label(p, k) for k, (p, (i, _)) in enumerate(zip(parts, ids)) if i in repeated]
        raise ExperimentFileError(f"shard {repeated[0]}/{count} is present more than once ({', '.join(holders)}); keep one copy")
    present = [f"{i}/{count}" for i, _ in sorted(ids)]
    expected = [f"{i}/{count}" for i in range(count)]
    if present != expected:
        raise ExperimentFileError(f"shards present {present}, expected {expected}; run the missing shards first")
    first = parts[0]
    for k, part in enumerate(parts[1:], start=1):
        for what, mine, theirs in (("config", part.config, first.config), ("model", part.model, first.model)):
            if mine != theirs:
                diff = "; ".join(_differences(theirs, mine)[:3]) if isinstance(mine, dict) and isinstance(theirs, dict) else ""
                raise ExperimentFileError(
                    f"shards come from different configs or models: {_label(part, k)} has another {what} than "
                    f"{_label(first, 0)} ({diff}); merge only the shards of one `run --shard` split"
                )
    _check_runs(parts, ids)
    runs = sorted((r for p in parts for r in p.runs), key=lambda r: (r.meta.get("prompt_index", 0), r.name))
    return Experiment(config=first.config, runs=runs, model=first.model, versions=first.versions, shard=None, path=path)
