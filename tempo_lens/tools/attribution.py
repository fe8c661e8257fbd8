"""Direct logit attribution for each sibling: which layers and heads write each sibling's logit.

A sibling of step ``s`` gets its logit on the rows that chose it (the rows of step ``s - 1``, see
:mod:`tempo_lens.siblings`). On such a row the final residual stream is a sum of terms:

- ``embed``: what enters block 0 (``blocks.0.hook_resid_pre``: token embedding, plus the learned
  position embedding on GPT-2 style models);
- ``head``: each head's output ``hook_z[h] @ W_O[h]`` of every layer;
- ``attn_bias``: each layer's attention output bias ``b_O`` (models that have one);
- ``mlp``: each layer's ``hook_mlp_out``.

The logit is ``norm(resid) @ W_U[:, t] + b_U[t]``. The final norm divides by a scale computed from
the whole residual (``ln_final.hook_scale``); freezing that scale at its actual value makes the
norm linear, so each term's attribution is ``norm_frozen(term) @ W_U[:, t]`` (centred first for
LayerNorm), and ``final_bias`` = ``ln_final bias @ W_U[:, t] + b_U[t]``. The terms then sum to the
logit exactly (up to float rounding); the approximation is in reading a term alone, as if the scale
did not depend on it. Models whose blocks are not this sum (post-attention norms, as in Gemma) are
refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..backends import Backend, backend_for
from ..errors import InvalidInputError
from ..siblings import RunSource, Sibling, reader_rows, run_view
from .common import Condition, cached_replay, check_steps, default_condition

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

COLUMNS = [
    "step",
    "rank",
    "token_id",
    "token",
    "reader_step",
    "reader_rank",
    "weight",
    "component",
    "layer",
    "head",
    "attribution",
    "logit",
]


FINAL = "final_residual"  # the cache key under which the final norm's input is kept, whatever its hook point


def _names(n_layers: int, final_residual: str) -> list[str]:
    per_layer = [f"blocks.{l}.{n}" for l in range(n_layers) for n in ("attn.hook_z", "hook_attn_out", "hook_mlp_out")]
    return ["blocks.0.hook_resid_pre", final_residual, "ln_final.hook_scale", "ln_final.hook_normalized"] + per_layer


def _terms(
    model: TransformerBridge, cache: dict[str, Tensor], rows: list[int]
) -> tuple[list[tuple], Float[Tensor, "term row d_model"]]:
    """Every additive term of the final residual on ``rows``: (component, layer, head) labels and vectors."""
    labels, vectors = [("embed", -1, -1)], [cache["blocks.0.hook_resid_pre"][rows]]
    for layer in range(int(model.cfg.n_layers)):
        attn = model.blocks[layer].attn
        heads: Float[Tensor, "row head_index d_model"] = torch.einsum(
            "rhd,hdm->rhm", cache[f"blocks.{layer}.attn.hook_z"][rows].float(), attn.W_O.float()
        )
        labels += [("head", layer, h) for h in range(heads.shape[1])]
        vectors += list(heads.unbind(1))
        attn_out = heads.sum(1)
        b_O = getattr(attn, "b_O", None)
        if b_O is not None:
            labels.append(("attn_bias", layer, -1))
            vectors.append(b_O.float().expand_as(attn_out))
            attn_out = attn_out + b_O.float()
        gap = (attn_out - cache[f"blocks.{layer}.hook_attn_out"][rows].float()).abs().max().item()
        if gap > 1e-3 * (1 + attn_out.abs().max().item()):
            raise InvalidInputError(
                f"layer {layer}: the heads' hook_z @ W_O (+ b_O) differs from hook_attn_out by {gap:.3g}; "
                "direct logit attribution needs attention output = sum of heads (no post-attention norm)"
            )
        labels.append(("mlp", layer, -1))
        vectors.append(cache[f"blocks.{layer}.hook_mlp_out"][rows])
    stacked = torch.stack([v.float() for v in vectors])
    gap = (stacked.sum(0) - cache[FINAL][rows].float()).abs().max().item()
    if gap > 1e-3 * (1 + cache[FINAL][rows].abs().max().item()):
        raise InvalidInputError(
            f"the final residual differs from embed + attention + MLP outputs by {gap:.3g}; direct logit "
            "attribution needs pre-norm blocks that add hook_attn_out and hook_mlp_out to the residual"
        )
    return labels, stacked


def _unembed_directions(
    backend: Backend, cache: dict[str, Tensor], rows: list[int], token_ids: list[int]
) -> tuple[Float[Tensor, "row d_model sibling"], Float[Tensor, " sibling"]]:
    """Per row, the frozen-scale direction each term is read along, and the constant ``final_bias`` per token."""
    model, norm = backend.model, backend.final_norm()
    x, scale = cache[FINAL][rows].float(), cache["ln_final.hook_scale"][rows].float()
    centred = torch.allclose((x - x.mean(-1, keepdim=True)) / scale, cache["ln_final.hook_normalized"][rows].float(), atol=1e-4)
    W_U = model.W_U.float()[:, token_ids]
    weight: Tensor = norm.weight  # type: ignore[assignment]  # a Parameter on every backend
    directions = weight.float()[None, :, None] * W_U[None] / scale[:, :, None]
    if centred:  # LayerNorm: (c - mean c) . d == c . (d - mean d)
        directions = directions - directions.mean(1, keepdim=True)
    bias = getattr(norm, "bias", None)
    constant = model.b_U.float()[token_ids] + (bias.float() @ W_U if bias is not None else 0.0)
    return directions, constant


def direct_logit_attribution(
    model: TransformerBridge,
    run: RunSource,
    steps: Sequence[int] | None = None,
    *,
    condition: Condition | None = None,
    next_token_source: str | None = None,
) -> pd.DataFrame:
    """Each term's contribution to the logit of every sibling of ``steps`` (default all), on each row that chose it.

    Columns: step, rank, token_id, token (the sibling), reader_step, reader_rank (the row read),
    weight (its share in the run's next-token source), component (embed, head, attn_bias, mlp,
    final_bias), layer, head (-1 when not a head), attribution, logit (the row's actual logit).
    Per (sibling, reader row) the attributions sum to ``logit``.
    """
    view = run_view(run, model)
    layout = view.layout
    chosen = check_steps(layout, steps)
    source = next_token_source or view.next_token_source
    backend = backend_for(model)
    final_residual = backend.final_residual_hook()
    rep = cached_replay(backend, layout, default_condition(view, condition), _names(int(model.cfg.n_layers), final_residual))
    rep.cache[FINAL] = rep.cache.pop(final_residual)
    records = []
    with torch.no_grad():
        for step in chosen:
            rows, weights = reader_rows(layout, step, source)
            targets = view.siblings(step)
            token_ids = [t.token_id for t in targets]
            labels, terms = _terms(model, rep.cache, rows)
            directions, constant = _unembed_directions(backend, rep.cache, rows, token_ids)
            attributions = torch.einsum("crm,rmt->crt", terms, directions)
            for r, (row, weight) in enumerate(zip(rows, weights)):
                logits = rep.logits[row, token_ids].float()
                for t, sibling in enumerate(targets):
                    base = (
                        sibling.step,
                        sibling.rank,
                        sibling.token_id,
                        sibling.token,
                        layout.steps[row],
                        layout.rank_of(row),
                        weight,
                    )
                    logit = float(logits[t])
                    values = attributions[:, r, t].tolist()
                    records += [base + (c, l, h, v, logit) for (c, l, h), v in zip(labels, values)]
                    records.append(base + ("final_bias", -1, -1, float(constant[t]), logit))
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def sibling_contrast(dla: pd.DataFrame, a: Sibling, b: Sibling) -> pd.DataFrame:
    """Which terms push sibling ``a`` over ``b`` (same step): ``attribution(a) - attribution(b)``, largest first.

    Per reader row the differences sum to the logit difference; rows are averaged with their
    ``weight``. Columns: component, layer, head, a, b, difference (sorted by its magnitude).
    """
    if a.step != b.step:
        raise InvalidInputError(f"siblings {a.label} and {b.label} are of different steps; compare siblings of one step")
    keys = ["component", "layer", "head"]

    def weighted(sibling: Sibling) -> pd.Series:
        part = dla[(dla["step"] == sibling.step) & (dla["rank"] == sibling.rank)]
        if part.empty:
            raise InvalidInputError(f"{sibling.label} is not in this attribution frame; include step {sibling.step}")
        return (part["attribution"] * part["weight"]).groupby([part[k] for k in keys], sort=False).sum()

    frame = pd.concat({"a": weighted(a), "b": weighted(b)}, axis=1).reset_index()
    frame["difference"] = frame["a"] - frame["b"]
    return frame.reindex(frame["difference"].abs().sort_values(ascending=False).index).reset_index(drop=True)
