"""Sparse-autoencoder latents of every token of a TEMPO run, and how parallel tokens differ in them.

Works with SAELens's SAEs (any object with ``encode`` and ``cfg.metadata.hook_name`` works) on any
model tempo_lens serves. The run is replayed teacher-forced under its own mask and shared positions
(:func:`~tempo_lens.tools.common.cached_replay`); when the SAE is attached to a ``HookedSAETransformer``
(``model.add_sae(sae)``) its ``hook_sae_acts_post`` is read, otherwise the activation at the SAE's hook
point is encoded with ``sae.encode``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..analysis.stats import bootstrap_ci
from ..backends import backend_for
from ..errors import InvalidInputError
from ..siblings import RunSource, run_view
from ..validation import check_finite
from .common import Condition, cached_replay, default_condition

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

COMPARED_COLUMNS = ("run", "step", "sibling", "parallel", "latent", "activation")  # what compare_sae_latents reads
LATENT_COLUMNS = [
    "run",
    "prompt",
    "step",
    "sibling",
    "physical_index",
    "logical_position",
    "token",
    "prob",
    "parallel",
    "latent",
    "activation",
]


def sae_hook_name(sae: Any) -> str:
    """The hook point an SAE reads (SAELens: ``sae.cfg.metadata.hook_name``)."""
    cfg = getattr(sae, "cfg", None)
    name = getattr(getattr(cfg, "metadata", None), "hook_name", None) or getattr(cfg, "hook_name", None)
    if not isinstance(name, str) or not hasattr(sae, "encode"):
        raise InvalidInputError("sae must be an SAE with encode() and cfg.metadata.hook_name (e.g. a sae_lens SAE)")
    return name


def sae_input_width(sae: Any) -> int | None:
    """The width an SAE encodes (SAELens: ``cfg.d_in``; else the rows of ``W_enc``), None when it does not say."""
    width = getattr(getattr(sae, "cfg", None), "d_in", None)
    if width is None and isinstance(getattr(sae, "W_enc", None), torch.Tensor):
        width = sae.W_enc.shape[0]
    return int(width) if isinstance(width, (int, np.integer)) else None


def sae_latents(
    model: TransformerBridge,
    source: RunSource,
    sae: Any,
    *,
    condition: Condition | None = None,
    min_activation: float = 0.0,
) -> pd.DataFrame:
    """One row per (generated token, active latent): run, prompt, step, sibling rank, physical index, logical
    position, token text, selection probability, parallel, latent, activation.

    ``source`` is a generation, a saved run or a layout; ``condition`` the replay (default: the run's own
    mode at shared positions). Prompt tokens are left out; latents at or below ``min_activation`` too.
    ``frame.attrs["n_tokens"]`` counts the run's generated tokens, parallel and not (``{"parallel": .., "other": ..}``),
    so a per-token mean can count the tokens where a latent is inactive.
    """
    min_activation = check_finite(min_activation, "min_activation")
    view = run_view(source, model)
    hook = sae_hook_name(sae)
    attached = f"{hook}.hook_sae_acts_post"
    reads_attached = attached in model.hook_dict
    replayed = cached_replay(
        backend_for(model), view.layout, default_condition(view, condition), [attached if reads_attached else hook]
    )
    acts = replayed.cache[attached if reads_attached else hook]
    if not reads_attached:
        acts = acts.flatten(1)  # per-head hook points (attn.hook_z: [pos, head, d_head]) as SAELens reads them
        width = sae_input_width(sae)
        if width is not None and width != acts.shape[-1]:
            raise InvalidInputError(
                f"the SAE encodes {width} values per token, but {hook} of this model holds {acts.shape[-1]}; "
                "use an SAE trained on this model's hook point"
            )
        with torch.no_grad():
            acts = sae.encode(acts.to(sae.W_enc.dtype if hasattr(sae, "W_enc") else acts.dtype))
    acts = acts.detach().float().cpu().numpy()  # [n_tokens, d_sae]
    layout, rows = view.layout, list[tuple]()
    parallel = layout.parallel_tensor().tolist()
    prompt = _prompt_of(source, view.token_strings, layout.n_prompt)
    for index in range(layout.n_prompt, len(layout)):
        active = np.nonzero(acts[index] > min_activation)[0]
        sibling = view.sibling(index)
        token = (view.name, prompt, sibling.step, sibling.rank, index, layout.logical_positions[index], sibling.token)
        rows.extend(
            (*token, layout.probs[index], bool(parallel[index]), int(latent), float(acts[index, latent])) for latent in active
        )
    frame = pd.DataFrame(rows, columns=LATENT_COLUMNS)
    generated = parallel[layout.n_prompt :]
    frame.attrs["n_tokens"] = {"parallel": sum(generated), "other": len(generated) - sum(generated)}
    return frame


def _prompt_of(source: RunSource, token_strings: list[str], n_prompt: int) -> str:
    """The run's prompt text: as given to ``generate``, as saved, or its decoded prompt tokens."""
    for name in ("prompt", "prompt_text"):
        value = getattr(source, name, None)
        if isinstance(value, str) and value:
            return value
    return "".join(token_strings[:n_prompt])


def _one_frame(frames: Iterable[pd.DataFrame] | pd.DataFrame) -> pd.DataFrame:
    """The frames as one, refusing a run name shared by two runs (their tokens would be pooled as one run)."""
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    seen: dict[str, int] = {}
    for i, part in enumerate(frames):
        for name in part["run"].unique() if "run" in part else []:
            if name in seen:
                raise InvalidInputError(
                    f"frames {seen[name]} and {i} both hold a run named {name!r}; each run needs its own name "
                    "(generate_batch names its results '<mode>-<index>'; for results of separate calls set result.name)"
                )
            seen[name] = i
    frame = pd.concat(frames, ignore_index=True) if len(frames) != 1 else frames[0]
    if frame.empty:
        raise InvalidInputError("no active latents to compare; run sae_latents on generations first")
    missing = [c for c in COMPARED_COLUMNS if c not in frame]
    if missing:
        raise InvalidInputError(f"the frames lack the columns {missing}; pass sae_latents' frames")
    repeated = frame.duplicated(["run", "step", "sibling", "latent"])
    if repeated.any():
        row = frame[repeated].iloc[0]
        raise InvalidInputError(
            f"run {row['run']!r} has latent {row['latent']} twice at step {row['step']}, sibling {row['sibling']}: two runs share "
            "that name; give each run its own name (result.name) before sae_latents"
        )
    return frame


def compare_sae_latents(frames: Iterable[pd.DataFrame] | pd.DataFrame, top: int = 10, seed: int = 0) -> pd.DataFrame:
    """Latents whose mean activation differs most between parallel and non-parallel tokens, across runs.

    Per run, a latent's mean activation over its parallel tokens minus over its non-parallel ones (tokens
    where it is inactive count as 0); then, over runs, the mean difference with a 95 % bootstrap interval
    (runs resampled; no interval, NaN, from a single run). Returns the ``top`` latents by absolute mean
    difference. Runs are told apart by the ``run`` column: two runs of one name are refused, never merged.
    """
    frame = _one_frame(frames)
    per_run = []
    for run, part in frame.groupby("run"):
        tokens = part.drop_duplicates(["step", "sibling"])
        n_par, n_other = int(tokens.parallel.sum()), int((~tokens.parallel).sum())
        if not n_par or not n_other:
            continue  # a run without both kinds of token says nothing about the difference
        sums = part.groupby(["latent", "parallel"]).activation.sum().unstack(fill_value=0.0)
        diff = sums.get(True, 0.0) / n_par - sums.get(False, 0.0) / n_other
        per_run.append(diff.rename(run))
    if not per_run:
        raise InvalidInputError("no run has both parallel and non-parallel generated tokens")
    table = pd.concat(per_run, axis=1).fillna(0.0)
    rows = []
    for latent, values in table.iterrows():
        mean, lo, hi = bootstrap_ci(values.to_numpy(), n_boot=2000, seed=seed)
        rows.append((int(latent), float(mean), float(lo), float(hi), len(values)))
    out = pd.DataFrame(rows, columns=["latent", "difference", "ci_low", "ci_high", "n_runs"])
    return out.reindex(out.difference.abs().sort_values(ascending=False).index).head(top).reset_index(drop=True)
