"""Experiments: a TOML config in, a folder of arrays + JSON out, reloadable without the model.

A folder holds ``metadata.json`` (format version, config, model facts, package versions, every run's
layout and token texts, a checksum of the arrays) and ``attention.npz`` (compressed per-step arrays
``[layers, batch, heads, queries, keys]``). It is written into a temporary sibling folder and renamed
into place, so a crash never leaves a half-written experiment that loads as valid, and the previous
result stays intact until the new one is complete. ``--shard i/n`` runs every n-th prompt; shard folders
placed side by side (``shard-i-of-n``) are merged by :func:`load_experiment`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import platform
import shutil
import time
import tomllib
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .atomic import atomic_directory, backups
from .capture import CapturedRun, CaptureSpec
from .errors import ConfigError, ExperimentFileError, InvalidInputError
from .layout import MODES, TokenLayout

FORMAT_VERSION = 2  # 2: metadata carries a checksum of its own content
METADATA = "metadata.json"
ARRAYS = "attention.npz"
CONTROLS = ("unique_positions", "toggled_mask")


# ---- config -------------------------------------------------------------------------------------

@dataclass
class ExperimentConfig:
    """What an experiment runs: prompts × modes on one model, with pruning, capture and controls."""

    name: str
    prompts: list[str]
    model: str | None = None
    threshold: float = 0.1
    max_steps: int = 10
    modes: list[str] = field(default_factory=lambda: ["isolated"])
    seed: int = 42
    max_parallel: int = 8
    min_steps: int = 0
    next_token_source: str = "mixture"
    threshold_schedule: str | None = None
    chat: bool = False
    pruning: dict | None = None
    capture_layers: list[int] | None = None
    capture_steps: list[int] | None = None
    controls: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


_TOP_KEYS = {
    "name", "prompt", "prompts", "prompts_file", "model", "threshold", "max_steps", "mode", "modes", "seed",
    "max_parallel", "min_steps", "next_token_source", "threshold_schedule", "chat", "pruning", "capture", "controls",
}
_PRUNING_KEYS = {"strategy", "attention_threshold", "layers", "layer_weights", "distance_prior", "similarity_threshold", "layer"}
_CAPTURE_KEYS = {"layers", "steps"}


def _unknown(keys: Iterable[str], allowed: set[str], where: str, source: str) -> None:
    bad = sorted(set(keys) - allowed)
    if bad:
        hints = []
        for key in bad:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{source}: unknown key{'s' if len(bad) > 1 else ''} {', '.join(hints)} in {where}; allowed: {', '.join(sorted(allowed))}")


def _all_or_ints(value: Any, key: str, source: str) -> list[int] | None:
    if value in (None, "all"):
        return None
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return value
    raise ConfigError(f"{source}: {key} must be \"all\" or a list of integers >= 0, got {value!r}")


def config_from_dict(data: dict, source: str = "config", base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a parsed config: unknown keys, missing prompts, wrong types and ranges are named."""
    _unknown(data, _TOP_KEYS, "the top level", source)
    prompts: list[str]
    for key in ("prompts_file", "model", "name"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{source}: {key} must be a string, got {data[key]!r}")
    if "prompts_file" in data:
        path = Path(data["prompts_file"])
        path = (base_dir / path) if base_dir and not path.is_absolute() else path
        try:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read prompts_file {str(path)!r}: {exc.strerror}") from None
    elif "prompts" in data:
        prompts = data["prompts"]
    elif "prompt" in data:
        prompts = [data["prompt"]]
    else:
        raise ConfigError(f"{source}: missing key 'prompt' (one prompt) or 'prompts' (a list) or 'prompts_file'")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ConfigError(f"{source}: prompts must be a non-empty list of non-empty strings")
    modes = data.get("modes", data.get("mode", "isolated"))
    modes = [modes] if isinstance(modes, str) else modes
    if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
        raise ConfigError(f"{source}: mode must be 'isolated', 'visible' or a list of them, got {modes!r}")
    pruning = data.get("pruning")
    if pruning is not None:
        if not isinstance(pruning, dict):
            raise ConfigError(f"{source}: [pruning] must be a table")
        _unknown(pruning, _PRUNING_KEYS, "[pruning]", source)
    capture = data.get("capture", {})
    if not isinstance(capture, dict):
        raise ConfigError(f"{source}: [capture] must be a table")
    _unknown(capture, _CAPTURE_KEYS, "[capture]", source)
    controls = data.get("controls", [])
    if not isinstance(controls, list) or any(c not in CONTROLS for c in controls):
        raise ConfigError(f"{source}: controls must be a list drawn from {list(CONTROLS)}, got {controls!r}")
    name = data.get("name") or (Path(source).stem if source != "config" else "experiment")
    config = ExperimentConfig(
        name=str(name),
        prompts=prompts,
        model=data.get("model") or None,
        modes=modes,
        pruning=pruning,
        capture_layers=_all_or_ints(capture.get("layers"), "capture.layers", source),
        capture_steps=_all_or_ints(capture.get("steps"), "capture.steps", source),
        controls=controls,
    )
    for key, kind in [("threshold", (int, float)), ("max_steps", int), ("seed", int), ("max_parallel", int),
                      ("min_steps", int), ("next_token_source", str), ("threshold_schedule", str), ("chat", bool)]:
        if key in data:
            value = data[key]
            if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
                raise ConfigError(f"{source}: {key} has the wrong type ({type(value).__name__}): {value!r}")
            setattr(config, key, value)
    # range checks reuse the generator's own validation
    from .generation import check_int, check_next_token_source, check_seed
    from .schedules import ThresholdSchedule

    try:
        ThresholdSchedule.parse(config.threshold, config.threshold_schedule)
        check_int(config.max_steps, "max_steps", 1)
        check_int(config.max_parallel, "max_parallel", 1)
        check_int(config.min_steps, "min_steps", 0)
        check_next_token_source(config.next_token_source)
        check_seed(config.seed)
        if pruning is not None:
            pruning_from_config(pruning)
    except InvalidInputError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(data, source=str(path), base_dir=path.parent)


def pruning_from_config(table: dict | None):
    if table is None:
        return None
    from .pruning import AttentionPruning, SimilarityPruning

    strategy = table.get("strategy", "attention")
    if strategy == "similarity":
        return SimilarityPruning(similarity_threshold=table.get("similarity_threshold", 0.95), layer=table.get("layer", -1))
    if strategy != "attention":
        raise InvalidInputError(f"pruning.strategy must be \"attention\" or \"similarity\", got {strategy!r}")
    if not isinstance(table.get("distance_prior", False), bool):
        raise InvalidInputError(f"pruning.distance_prior must be true or false, got {table['distance_prior']!r}")
    return AttentionPruning(
        attention_threshold=table.get("attention_threshold", 0.5),
        layers=table.get("layers"),
        layer_weights=table.get("layer_weights"),
        use_distance_prior=bool(table.get("distance_prior", False)),
    )


# ---- experiments in memory ----------------------------------------------------------------------

@dataclass
class Experiment:
    """Runs plus the facts needed to read them (model shape, config, versions)."""

    config: dict
    runs: list[CapturedRun]
    model: dict
    versions: dict = field(default_factory=dict)
    shard: str | None = None
    path: Path | None = None

    def run(self, name: str) -> CapturedRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run {name!r}; runs: {[r.name for r in self.runs]}")

    def generated(self) -> list[CapturedRun]:
        return [r for r in self.runs if r.meta.get("variant", "generated") == "generated"]

    def variant(self, variant: str) -> list[CapturedRun]:
        return [r for r in self.runs if r.meta.get("variant") == variant]


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("tempo_lens", "torch", "transformers", "transformer-lens", "numpy"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise InvalidInputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InvalidInputError(f"--shard {text}: need 0 <= i < n")
    return index, count


def run_experiment(
    config: ExperimentConfig,
    model: Any = None,
    *,
    shard: tuple[int, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Experiment:
    """Generate every (prompt, mode) of the config (this shard's prompts only), with capture and controls."""
    from .generation import generate
    from .model import load_model, model_name
    from .replay import replay

    model = model if model is not None else load_model(config.model)
    indices = list(range(len(config.prompts)))
    if shard is not None:
        indices = indices[shard[0] :: shard[1]]
    capture = CaptureSpec(layers=config.capture_layers, steps=config.capture_steps)
    runs: list[CapturedRun] = []
    total = len(indices) * len(config.modes)
    done = 0
    for index in indices:
        prompt = config.prompts[index]
        for mode in config.modes:
            done += 1
            if progress:
                progress(f"{config.name}: prompt {index + 1}/{len(config.prompts)} {mode} ({done}/{total})")
            result = generate(
                model, prompt, threshold=config.threshold, max_steps=config.max_steps, mode=mode,
                max_parallel=config.max_parallel, min_steps=config.min_steps,
                next_token_source=config.next_token_source, threshold_schedule=config.threshold_schedule,
                pruning=pruning_from_config(config.pruning), capture=capture, chat=config.chat, seed=config.seed,
            )
            name = f"p{index:02d}-{mode}"
            run = CapturedRun.from_result(result, name=name, variant="generated", prompt_index=index)
            runs.append(run)
            layers = run.layers
            if "unique_positions" in config.controls:
                rep = replay(model, result.layout, positions="unique", mask=mode, layers=layers)
                runs.append(_replay_run(run, rep, f"{name}/unique", "unique_positions", mode))
            if "toggled_mask" in config.controls:
                other = "visible" if mode == "isolated" else "isolated"
                rep = replay(model, result.layout, positions="shared", mask=other, layers=layers)
                runs.append(_replay_run(run, rep, f"{name}/{other}-mask", "toggled_mask", other))
    cfg = model.cfg
    facts = {
        "name": model_name(model),
        "n_layers": int(cfg.n_layers),
        "n_heads": int(cfg.n_heads),
        "n_kv_heads": int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        "d_model": int(cfg.d_model),
        "n_ctx": int(cfg.n_ctx),
    }
    shard_text = None if shard is None else f"{shard[0]}/{shard[1]}"
    return Experiment(config=config.to_dict(), runs=runs, model=facts, versions=package_versions(), shard=shard_text)


def _replay_run(source: CapturedRun, rep, name: str, variant: str, mask_mode: str) -> CapturedRun:
    wanted = set(source.attention)
    return CapturedRun(
        name=name, prompt=source.prompt, mode=mask_mode, layout=source.layout, token_strings=source.token_strings,
        layers=list(rep.layers), attention={s: a for s, a in rep.attention.items() if s in wanted},
        meta={**source.meta, "variant": variant, "source_run": source.name, "mode": mask_mode},
    )


# ---- files --------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recover_interrupted_overwrite(target: Path) -> Path | None:
    """Put back the previous result when an overwrite was killed between its two renames.

    :func:`save_experiment` moves the old folder aside (``.NAME.old-*``) and then moves the new one in;
    a process killed between the two leaves no ``NAME`` at all. If so, the newest complete backup is
    renamed back (and returned), so the previous result is never lost.
    """
    if target.exists() or target.is_symlink() or not target.parent.is_dir():
        return None
    complete = [p for p in backups(target) if (p / METADATA).is_file()]
    if not complete:
        return None
    os.replace(complete[-1], target)
    warnings.warn(f"restored {target} from {complete[-1].name}, left by an interrupted overwrite", stacklevel=3)
    return target


def check_can_write(target: Path, overwrite: bool) -> None:
    """Refuse an existing target without ``overwrite``, and never replace something that is not an experiment.

    ``overwrite`` replaces an experiment folder (its own files and ``shard-i-of-n`` folders, intact or
    damaged), never a file or a folder holding anything else, so a mistyped ``--out`` cannot delete data.
    """
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExperimentFileError(f"cannot write {target}: {parent} is a file, not a folder; choose another --out")
            break
    recover_interrupted_overwrite(target)
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise ExperimentFileError(f"{target} already exists; pass --overwrite (overwrite=True) to replace it, or choose another --out")
    if target.is_symlink() or not target.is_dir():
        raise ExperimentFileError(f"{target} exists and is not an experiment folder; --overwrite only replaces experiment folders. Choose another --out")
    foreign = sorted(
        p.name for p in target.iterdir()
        if not (p.name in (METADATA, ARRAYS) and p.is_file()) and not (p.is_dir() and p.name.startswith("shard-"))
    )
    if foreign:
        raise ExperimentFileError(
            f"{target} holds files that are not part of an experiment ({', '.join(foreign[:5])}); --overwrite only "
            "replaces experiment folders. Choose another --out or move those files"
        )


_STALE_TMP_S = 3600  # a write takes seconds; an older temporary folder was left by a killed process


def _remove_stale_tmp(target: Path) -> None:
    """Delete temporary folders that killed writes into ``target`` left behind (never a recent one)."""
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        if leftover.is_dir() and now - leftover.stat().st_mtime > _STALE_TMP_S:
            shutil.rmtree(leftover, ignore_errors=True)


def save_experiment(experiment: Experiment, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write atomically: a temporary sibling folder, then a rename; an existing folder needs ``overwrite``."""
    target = Path(directory)
    check_can_write(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(target)
    with atomic_directory(target) as tmp:
        arrays = {}
        runs_meta = []
        for i, run in enumerate(experiment.runs):
            for step, array in run.attention.items():
                arrays[f"r{i}_s{step}"] = np.ascontiguousarray(array, dtype=np.float32)
            runs_meta.append({
                "name": run.name, "prompt": run.prompt, "mode": run.mode, "layers": run.layers,
                "steps": sorted(run.attention), "token_strings": run.token_strings,
                "layout": run.layout.to_dict(), "meta": run.meta,
            })
        np.savez_compressed(tmp / ARRAYS, **arrays)
        metadata = {
            "format_version": FORMAT_VERSION,
            "kind": "tempo_lens.experiment",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": experiment.config,
            "model": experiment.model,
            "versions": experiment.versions,
            "shard": experiment.shard,
            "arrays_sha256": _sha256(tmp / ARRAYS),
            "runs": runs_meta,
        }
        metadata["metadata_sha256"] = _metadata_digest(metadata)
        with open(tmp / METADATA, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
    experiment.path = target
    return target


def _metadata_digest(metadata: dict) -> str:
    """Checksum of the metadata's content (every key but the checksum itself), so edits are detected."""
    content = {k: v for k, v in metadata.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


def _read_metadata(directory: Path) -> dict:
    path = directory / METADATA
    if directory.exists() and not directory.is_dir():
        raise ExperimentFileError(f"{directory} is a file, not an experiment folder; pass the folder `tempo-lens run` wrote")
    if not directory.is_dir():
        raise ExperimentFileError(f"{directory} is not an experiment folder (it does not exist); run `tempo-lens run CONFIG --out {directory}` first")
    if not path.is_file():
        raise ExperimentFileError(f"{directory} has no {METADATA}: not an experiment folder, or an interrupted write; re-run the experiment")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExperimentFileError(f"{path} is corrupt ({exc}); re-run the experiment") from None
    if not isinstance(data, dict) or data.get("kind") != "tempo_lens.experiment":
        raise ExperimentFileError(f"{path} is not a tempo_lens experiment file; re-run the experiment")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        numeric = isinstance(version, (int, float)) and not isinstance(version, bool)
        relation = ("newer" if version > FORMAT_VERSION else "older") if numeric else "unknown"
        raise ExperimentFileError(
            f"{directory} has experiment format version {version!r} ({relation}); this tempo_lens reads version "
            f"{FORMAT_VERSION}. Re-run the experiment with this version (or install the tempo_lens that wrote it)."
        )
    return data


def _load_single(directory: Path) -> Experiment:
    data = _read_metadata(directory)
    arrays_path = directory / ARRAYS
    if not arrays_path.is_file():
        raise ExperimentFileError(f"{directory} is missing {ARRAYS}; re-run the experiment")
    if _sha256(arrays_path) != data.get("arrays_sha256"):
        raise ExperimentFileError(f"{arrays_path} does not match the checksum in {METADATA} (truncated or edited); re-run the experiment")
    try:
        with np.load(arrays_path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ExperimentFileError(f"{arrays_path} is unreadable ({exc}); re-run the experiment") from None
    runs = []
    try:
        config, model = data["config"], data["model"]
        for i, meta in enumerate(data["runs"]):
            layout = TokenLayout.from_dict(meta["layout"])
            attention = {int(s): arrays[f"r{i}_s{s}"] for s in meta["steps"]}
            n_layers = len(meta["layers"])
            for step, array in attention.items():
                r = layout.step_range(step)
                if array.ndim != 5 or array.shape[0] != n_layers or array.shape[3] != len(r) or array.shape[4] != r.stop:
                    raise ValueError(f"run {meta['name']} step {step}: array shape {array.shape} does not fit the layout")
            if len(meta["token_strings"]) != len(layout):
                raise ValueError(f"run {meta['name']}: {len(meta['token_strings'])} token texts for {len(layout)} tokens")
            runs.append(CapturedRun(
                name=meta["name"], prompt=meta["prompt"], mode=meta["mode"], layout=layout,
                token_strings=meta["token_strings"], layers=meta["layers"], attention=attention, meta=meta["meta"],
            ))
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ExperimentFileError(f"{directory}: metadata does not fit the arrays ({exc}); re-run the experiment") from None
    if data.get("metadata_sha256") != _metadata_digest(data):
        raise ExperimentFileError(f"{directory / METADATA} does not match its own checksum (edited or damaged); re-run the experiment")
    return Experiment(config=config, runs=runs, model=model, versions=data.get("versions", {}),
                      shard=data.get("shard"), path=directory)


def load_experiment(directory: str | os.PathLike) -> Experiment:
    """Reload an experiment without the model; a folder of ``shard-i-of-n`` folders is merged."""
    directory = Path(directory)
    recover_interrupted_overwrite(directory)
    shards = sorted(directory.glob("shard-*-of-*")) if directory.is_dir() and not (directory / METADATA).exists() else []
    if not shards:
        return _load_single(directory)
    parts = [_load_single(s) for s in shards]
    return merge_experiments(parts, path=directory)


def merge_experiments(parts: Sequence[Experiment], path: Path | None = None) -> Experiment:
    """Join shards of one experiment (same config and model); every shard must be present once."""
    first = parts[0]
    for part in parts[1:]:
        if part.config != first.config or part.model != first.model:
            raise ExperimentFileError("shards come from different configs or models; they cannot be merged")
    shard_ids = sorted(p.shard for p in parts if p.shard)
    if shard_ids:
        count = int(shard_ids[0].split("/")[1])
        expected = [f"{i}/{count}" for i in range(count)]
        if sorted(shard_ids) != sorted(expected):
            raise ExperimentFileError(f"shards present {shard_ids}, expected {expected}; run the missing shards first")
    runs = sorted((r for p in parts for r in p.runs), key=lambda r: (r.meta.get("prompt_index", 0), r.name))
    return Experiment(config=first.config, runs=runs, model=first.model, versions=first.versions, shard=None, path=path)


def shard_folder(out: Path, shard: tuple[int, int] | None) -> Path:
    return out if shard is None else out / f"shard-{shard[0]}-of-{shard[1]}"
