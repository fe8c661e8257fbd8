"""Running an experiment: every (prompt, mode) of a config through batched TEMPO, plus the control replays.

Data flows one way: a config (:mod:`.config`) goes in, an in-memory :class:`~.storage.Experiment`
comes out, and :mod:`.storage` writes it. Prompts of one mode run together through
:func:`~tempo_lens.generation.generate_batch` (``batch_size`` rows per forward), and each result is
then replayed for the controls: the same tokens at unique positions (RoPE sharing off) and with the
isolation mask toggled (a paired isolated-vs-visible comparison on identical tokens).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ..backends import backend_for
from ..capture import CapturedRun
from ..errors import ConfigError, InvalidInputError
from ..generation.steps import check_context
from ..io.records import FieldError, clean
from ..layout import Mode
from ..models.identity import checkpoint_parameters, loaded_fingerprint
from ..models.loading import load_model, model_name
from ..replaying import replay
from .budget import attention_bytes, check_memory, check_run_count, estimate_seconds, run_count
from .config import ExperimentConfig, setting_words
from .record import check_config
from .shards import shard_numbers, shard_problem
from .storage import Experiment

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    from ..backends.base import BackendName

OTHER_MODE: dict[str, Mode] = {"isolated": "visible", "visible": "isolated"}
CHUNK = 64  # prompts generated between two progress lines


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def package_versions() -> dict:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("tempo_lens", "torch", "transformers", "transformer-lens", "numpy"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` as ``(i, n)`` with ``0 <= i < n <= 10000`` (None stays None)."""
    if text is None:
        return None
    numbers = shard_numbers(text)
    if numbers is None:
        raise InvalidInputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
    problem = shard_problem(*numbers)
    if problem:
        raise InvalidInputError(f"--shard {text}: {problem}")
    return numbers


def shard_indices(n_prompts: int, shard: tuple[int, int] | None) -> list[int]:
    """The prompts a shard runs: ``p`` with ``p mod n == i`` (all of them without a shard)."""
    indices = list(range(n_prompts))
    return indices if shard is None else indices[shard[0] :: shard[1]]


def shard_folder(out: Path, shard: tuple[int, int] | None) -> Path:
    return out if shard is None else out / f"shard-{shard[0]}-of-{shard[1]}"


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of ``model``, each storage counted once (tied weights and a bridge's views of them are one)."""
    return int(sum({p.data_ptr(): p.numel() for p in model.parameters()}.values()))


def model_facts(model: TransformerBridge) -> dict:
    cfg, backend = model.cfg, backend_for(model)
    source = getattr(model, "tempo_lens_source", None)
    stored = checkpoint_parameters(Path(source)) if source and Path(source).is_dir() else None
    return {
        "name": model_name(model),
        "n_layers": int(cfg.n_layers),
        "n_heads": int(cfg.n_heads),
        "n_kv_heads": int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        "d_model": int(cfg.d_model),
        "n_ctx": int(cfg.n_ctx),
        "n_params": stored if stored is not None else parameter_count(model),  # the checkpoint's count, for every backend
        "dtype": str(backend.dtype).removeprefix("torch."),
        "backend": backend.name,
        "fingerprint": loaded_fingerprint(model),  # what the model is (its files), not only its name
    }


def check_loaded_config(config: ExperimentConfig, model: TransformerBridge) -> None:
    """The rules ``load_experiment`` applies to the saved config, with the model's layer count, before generation."""
    n_layers = int(model.cfg.n_layers)
    if config.generation.capture is not None:
        config.generation.capture.layers_for(n_layers)  # generate's own words for a layer this model lacks
    try:
        check_config(json.loads(json.dumps(config.to_dict())), n_layers)
    except FieldError as exc:
        raise ConfigError(f"{config.name}: {setting_words(exc.where)} {exc.problem} for this model") from None


def run_experiment(
    config: ExperimentConfig,
    model: TransformerBridge | None = None,
    *,
    shard: tuple[int, int] | None = None,
    progress: Callable[[str], None] | None = None,
    allow_large: bool = False,
    prompt_indices: list[int] | None = None,
    backend: BackendName = "bridge",
) -> Experiment:
    """Generate every (prompt, mode) of the config (this shard's prompts only), with capture and controls.

    ``model``: a loaded model (any backend); else the config's model is loaded as ``backend``.
    ``prompt_indices`` runs only those prompts (a chunk of a streamed run, :mod:`.stream`). The run
    count is checked before the model loads, and the memory the captured attention needs right
    after (:mod:`.budget`); past either bound the experiment must be asked for (``allow_large``).
    """
    from ..generation import generate_batch  # deferred: pandas (through tempo_lens.generation)
    from ..io.memory import available_bytes  # deferred: torch

    indices = shard_indices(len(config.prompts), shard) if prompt_indices is None else list(prompt_indices)
    check_run_count(config, allow_large, n_prompts=len(indices))  # before the model loads
    model = model if model is not None else load_model(config.model, dtype=config.dtype, backend=backend)
    check_loaded_config(config, model)
    served = backend_for(model)
    if indices:
        longest = max(len(model.tokenizer(config.prompts[i])["input_ids"]) for i in indices)
        check_context(served, longest, config.generation)  # generate's own rule, before any estimate
        need = attention_bytes(config, int(model.cfg.n_layers), int(model.cfg.n_heads), longest, len(indices))
        check_memory(need, available_bytes(served.device), config, allow_large)
        if progress:
            seconds, probe = estimate_seconds(model, config, len(indices))
            progress(
                f"{config.name}: {run_count(config, len(indices))} runs; captured attention up to {need / 2**20:,.0f} MiB; "
                f"at most about {_duration(seconds)} (one {config.generation.max_parallel}-token forward took "
                f"{probe * 1e3:.0f} ms here; batching shares forwards)"
            )
    runs: dict[tuple[int, str], list[CapturedRun]] = {}
    speed = clean(served.speed_record())  # the kernels every run of this model ran (replays inherit it)
    started, total = time.perf_counter(), len(indices) * len(config.modes)
    for m, mode in enumerate(config.modes if indices else []):  # a shard may hold no prompt
        settings = config.generation.replace(mode=mode)
        chunk = max(CHUNK, config.batch_size or 0)
        results = []
        for first in range(0, len(indices), chunk):  # in chunks, so progress (and its time estimate) shows
            part = indices[first : first + chunk]
            results += generate_batch(model, [config.prompts[i] for i in part], settings, batch_size=config.batch_size)
            if progress:
                done = m * len(indices) + first + len(part)
                left = (time.perf_counter() - started) / done * (total - done)
                progress(
                    f"{config.name}: {mode}: generated {first + len(part)}/{len(indices)} prompt(s); "
                    f"about {left / 60:.1f} min of generation left"
                )
        for done, (index, result) in enumerate(zip(indices, results), start=1):
            if progress:
                progress(f"{config.name}: prompt {index + 1}/{len(config.prompts)} {mode}: controls ({done}/{len(indices)})")
            name = f"p{index:02d}-{mode}"
            run = CapturedRun.from_result(
                result, name=name, variant="generated", prompt_index=index, mask=mode, positions="shared", speed=speed
            )
            group = runs[(index, mode)] = [run]
            if "unique_positions" in config.controls:
                rep = replay(model, result.layout, positions="unique", mask=run.mask, layers=run.layers)
                group.append(_replay_run(run, rep, f"{name}/unique", "unique_positions", mask=mode, positions="unique"))
            if "toggled_mask" in config.controls:
                other = OTHER_MODE[mode]
                rep = replay(model, result.layout, positions="shared", mask=other, layers=run.layers)
                group.append(_replay_run(run, rep, f"{name}/{other}-mask", "toggled_mask", mask=other, positions="shared"))
    ordered = [run for index in indices for mode in config.modes for run in runs[(index, mode)]]
    shard_text = None if shard is None else f"{shard[0]}/{shard[1]}"
    return Experiment(
        config=config.to_dict(), runs=ordered, model=model_facts(model), versions=package_versions(), shard=shard_text
    )


def _replay_run(source: CapturedRun, rep, name: str, variant: str, mask: str, positions: str) -> CapturedRun:
    """A control replay as a run: its ``mode`` stays the generation's; ``mask``/``positions`` (in meta) say what produced it."""
    wanted = set(source.attention)
    return CapturedRun(
        name=name,
        prompt=source.prompt,
        mode=source.mode,
        layout=source.layout,
        token_strings=source.token_strings,
        layers=list(rep.layers),
        attention={s: a for s, a in rep.attention.items() if s in wanted},
        meta={**source.meta, "variant": variant, "source_run": source.name, "mask": mask, "positions": positions},
    )
