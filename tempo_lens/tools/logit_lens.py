"""Logit lens for each sibling: what every layer's residual stream already predicts.

The lens reads a row's residual stream after layer ``L`` (``blocks.L.hook_resid_post``) through
the model's final norm and unembedding, as if the model stopped there. At the last layer it is the
model's output. Two readings per chosen step ``s`` (see :mod:`tempo_lens.siblings` for why):

- ``relation="own"``: each sibling of ``s`` scored by the distribution that chose it, which is the
  previous step's rows combined by the run's next-token source (the mixture by default; the last
  prompt row for step 0). At the last layer its probability is the sibling's selection probability.
- ``relation="next"``: each sibling of ``s + 1`` scored by each single row of ``s``'s siblings, so
  one sees which sibling's row predicts which continuation, and from which layer.

``kl_to_final`` is ``KL(P_last_layer || P_layer)`` (nats) of the reading distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..backends import Backend, as_backend, backend_for
from ..siblings import RunSource, reader_rows, run_view
from .common import Condition, cached_replay, check_layers, check_steps, default_condition, kl_divergence, mix_log_probs

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

COLUMNS = [
    "layer",
    "relation",
    "step",
    "rank",
    "token_id",
    "token",
    "reader",
    "reader_step",
    "reader_rank",
    "prob",
    "token_rank",
    "kl_to_final",
]


def lens_logits(model: TransformerBridge | Backend, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """Final norm then unembedding applied to a residual stream (the model's own modules, no hooks fired)."""
    backend = as_backend(model)
    with torch.no_grad():
        return backend.unembed_logits(backend.final_norm()(resid)).float()


def _score(
    log_p: Float[Tensor, " d_vocab"], final_log_p: Float[Tensor, " d_vocab"], token_ids: list[int]
) -> tuple[list[float], list[int], float]:
    """(probabilities of ``token_ids``, their ranks (0 = argmax), KL(final || this)) under ``log_p``."""
    picked = log_p[token_ids]
    ranks = (log_p[None, :] > picked[:, None]).sum(-1)
    return picked.exp().tolist(), ranks.tolist(), kl_divergence(final_log_p, log_p)


def logit_lens(
    model: TransformerBridge,
    run: RunSource,
    steps: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    *,
    condition: Condition | None = None,
    next_token_source: str | None = None,
) -> pd.DataFrame:
    """The lens for the siblings of ``steps`` (default all) at ``layers`` (default all), one row per score.

    ``run``: a GenerationResult, CapturedRun or TokenLayout; ``condition``: how to replay it (default
    its own mode, shared positions); ``next_token_source``: how rows combine (default the run's).
    Columns: layer, relation (own / next), step, rank, token_id, token (the scored sibling), reader
    (label), reader_step, reader_rank (-1: the combined distribution), prob, token_rank, kl_to_final.
    """
    view = run_view(run, model)
    layout = view.layout
    chosen_steps = check_steps(layout, steps)
    chosen_layers = check_layers(model, layers)
    source = next_token_source or view.next_token_source
    last = int(model.cfg.n_layers) - 1
    names = {l: f"blocks.{l}.hook_resid_post" for l in sorted(set(chosen_layers) | {last})}
    backend = backend_for(model)
    rep = cached_replay(backend, layout, default_condition(view, condition), list(names.values()))

    readings = []  # (relation, target step, reader label, reader step, reader rank, rows, weights)
    for step in chosen_steps:
        rows, weights = reader_rows(layout, step, source)
        label = f"{source} of s{step - 1}" if step > 0 else "last prompt row"
        readings.append(("own", step, label, step - 1, -1, rows, weights))
        if step + 1 < layout.n_steps:
            for sibling in view.siblings(step):
                readings.append(("next", step + 1, sibling.label, step, sibling.rank, [sibling.index(layout)], [1.0]))
    all_rows = sorted({r for reading in readings for r in reading[5]})
    position = {r: i for i, r in enumerate(all_rows)}

    def log_probs(layer: int) -> Tensor:
        return torch.log_softmax(lens_logits(backend, rep.cache[names[layer]][all_rows]), dim=-1)

    def combined(table: Tensor, rows: list[int], weights: list[float]) -> Tensor:
        return mix_log_probs(table[[position[r] for r in rows]], weights)

    final = log_probs(last)
    records = []
    for layer in chosen_layers:
        table = final if layer == last else log_probs(layer)
        for relation, target, label, reader_step, reader_rank, rows, weights in readings:
            targets = view.siblings(target)
            probs, ranks, kl = _score(
                combined(table, rows, weights), combined(final, rows, weights), [t.token_id for t in targets]
            )
            for sibling, prob, rank in zip(targets, probs, ranks):
                records.append(
                    (
                        layer,
                        relation,
                        sibling.step,
                        sibling.rank,
                        sibling.token_id,
                        sibling.token,
                        label,
                        reader_step,
                        reader_rank,
                        prob,
                        rank,
                        kl,
                    )
                )
    return pd.DataFrame.from_records(records, columns=COLUMNS)
