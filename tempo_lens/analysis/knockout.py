"""The attention knock-out: what attention to earlier parallel keys does to the next token.

For every step whose queries can see earlier parallel tokens and that has a matched control (enough
non-parallel generated keys; the summary reads only such steps), the step is fed again with one set of
keys removed from its queries (scores set to ``-inf``, then renormalised by the softmax), on the layers of
one block:

- ``"parallel"``: every visible key of an earlier step that kept two or more siblings;
- ``"matched"``: as many visible non-parallel *generated* keys, each drawn (fixed seed) among those
  nearest in logical distance to one parallel key, so distance and token kind are held fixed;
- ``"sink"``: the first token alone, to scale the other two (on every layer: block ``"all"`` only).

Each arm is measured by the KL divergence of the step's next-token distribution (the run's own
``next_token_source`` over the step's rows) from the unablated replay's, and by whether the kept set
(the run's threshold and ``max_parallel``) changes. One unablated forward of the run fills a KV cache;
each (step, arm, block) is then one batch row feeding only its step's siblings after it (a knock-out
changes nothing before its step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..backends import backend_for
from ..errors import InvalidInputError
from ..generation.steps import next_distribution, select_siblings
from ..hooks import attention_block_hooks, tempo_hooks, tempo_position_hooks
from ..layout import Mode, TokenLayout

Arm = Literal["parallel", "matched", "sink"]
ARMS: tuple[Arm, ...] = get_args(Arm)
Block = Literal["all", "early", "middle", "late"]
BLOCKS: tuple[Block, ...] = get_args(Block)
BATCH_ROWS = 48  # (step, arm, block) rows per forward


@dataclass(frozen=True)
class StepKnockout:
    """One arm's knock-out at one step: how many keys it removed, the KL it caused, and if the kept set moved."""

    step: int
    arm: Arm
    block: Block
    n_keys: int
    kl: float
    kept_changed: bool
    distance_gap: float = 0.0  # matched arm: mean |logical distance difference| to the parallel keys it stands for


@dataclass(frozen=True)
class RunKnockout:
    """A run's knock-out summary: mean KL per arm over its measured steps, their ratio and difference."""

    block: Block
    n_steps: int
    mean_kl: dict[str, float]
    kept_changed_share: dict[str, float]
    kl_ratio: float | None  # mean KL(parallel) / mean KL(matched); None when the control's KL is below KL_FLOOR
    kl_difference: float


KL_FLOOR = 1e-9  # a control KL below this (in nats) makes the parallel : matched ratio unmeasurable


def layer_blocks(n_layers: int) -> dict[Block, list[int]]:
    """Every layer, and the early, middle and late thirds (the middle third takes the remainder)."""
    third = n_layers // 3
    return {
        "all": list(range(n_layers)),
        "early": list(range(third)),
        "middle": list(range(third, n_layers - third)),
        "late": list(range(n_layers - third, n_layers)),
    }


def visible_earlier_keys(layout: TokenLayout, step: int) -> list[int]:
    """Keys of earlier steps (generated tokens) that the queries of ``step`` can see."""
    start = layout.step_range(step).start
    return [j for j in range(start) if layout.steps[j] >= 0 and not layout.is_hidden(j, step)]


def parallel_keys(layout: TokenLayout, step: int) -> list[int]:
    """The visible keys of earlier steps that kept two or more siblings."""
    return [j for j in visible_earlier_keys(layout, step) if layout.is_parallel(j)]


def matched_keys(layout: TokenLayout, step: int, rng: np.random.Generator) -> tuple[list[int], float] | None:
    """One non-parallel generated key per parallel key, nearest in logical distance (ties drawn by ``rng``).

    Returns the keys and the mean |distance difference|, or None when there are fewer candidates than
    parallel keys (the step has no matched control).
    """
    wanted = parallel_keys(layout, step)
    pool = [j for j in visible_earlier_keys(layout, step) if not layout.is_parallel(j)]
    if not wanted or len(pool) < len(wanted):
        return None
    query_position = layout.logical_positions[layout.step_range(step).start]
    distance = {j: query_position - layout.logical_positions[j] for j in wanted + pool}
    chosen: list[int] = []
    gaps: list[float] = []
    for key in sorted(wanted, key=lambda j: distance[j]):
        gap = {j: abs(distance[j] - distance[key]) for j in pool if j not in chosen}
        nearest = min(gap.values())
        ties = sorted(j for j, g in gap.items() if g == nearest)
        chosen.append(ties[int(rng.integers(len(ties)))])
        gaps.append(float(nearest))
    return sorted(chosen), float(np.mean(gaps))


def knockout_steps(layout: TokenLayout) -> list[int]:
    """The steps whose queries see at least one earlier parallel key."""
    return [s for s in range(layout.n_steps) if parallel_keys(layout, s)]


def kl_divergence(p: Float[Tensor, " d_vocab"], q: Float[Tensor, " d_vocab"]) -> float:
    """KL(p || q) in nats, in float64; terms where p is 0 contribute 0."""
    p64, q64 = p.double(), q.double()
    terms = p64 * (p64.clamp_min(1e-300).log() - q64.clamp_min(1e-300).log())
    return float(torch.where(p64 > 0, terms, 0.0).sum())


@dataclass(frozen=True)
class _Arm:
    step: int
    arm: Arm
    keys: list[int]
    distance_gap: float


@dataclass(frozen=True)
class _Row:
    """One row of a knock-out forward: an arm at a step, knocked out on the layers of one block."""

    arm: _Arm
    block: Block


def _arms(layout: TokenLayout, steps: Sequence[int], seed: int) -> list[_Arm]:
    rng = np.random.default_rng(seed)
    arms: list[_Arm] = []
    for step in steps:
        matched = matched_keys(layout, step, rng)
        arms.append(_Arm(step, "parallel", parallel_keys(layout, step), 0.0))
        if matched is not None:
            arms.append(_Arm(step, "matched", matched[0], matched[1]))
        if not layout.is_hidden(0, step):
            arms.append(_Arm(step, "sink", [0], 0.0))
    return arms


def baseline_forward(model: Any, layout: TokenLayout, mode: Mode) -> tuple[Float[Tensor, "pos d_vocab"], Any]:
    """The run's own replay, unablated (every arm's KL is taken from its logits), and the KV cache it leaves.

    Every key's cached keys and values are those of the run: a knock-out only changes what a step's own
    queries read, so the tokens before it, and what they cache, are the same in every arm.
    """
    backend = backend_for(model)
    backend.prepare()
    cache = backend.new_cache(1)
    with torch.no_grad(), model.hooks(fwd_hooks=tempo_hooks(model, layout, mode)):
        logits = backend.forward_step([layout.token_ids], cache)[0]
    return logits.float().cpu(), cache


def _row_masks(
    layout: TokenLayout, mode: Mode, rows: Sequence[_Row], width: int, windows: Sequence[int | None]
) -> tuple[dict[int | None, Bool[Tensor, "batch query_pos key_pos"]], Bool[Tensor, "batch query_pos key_pos"]]:
    """Each row's base mask per window and its knock-out, over the cached run's ``n`` keys and then the row's own tokens.

    Row ``b`` feeds its step's siblings again after the whole cached run, in columns ``n .. n + k``: they see
    the run's keys before their step as the run's own queries did (mode, pruning, window), and each other as
    the mode allows; the run's cached copies of their step, and every later key, stay hidden. Columns past
    ``k`` are padding, hidden from every real query (a padding query keeps its own key).
    """
    n = len(layout)
    base = {w: torch.ones(len(rows), width, n + width, dtype=torch.bool) for w in windows}
    knock = torch.zeros(len(rows), width, n + width, dtype=torch.bool)
    run_masks = {w: layout.blocked(mode, window=w) for w in windows}  # what each of the run's queries saw
    for b, row in enumerate(rows):
        span = layout.step_range(row.arm.step)
        k = len(span)
        for w in windows:
            full = run_masks[w][span.start : span.stop]  # the step's queries
            base[w][b, :k, : span.start] = full[:, : span.start]
            base[w][b, :k, n : n + k] = full[:, span.start : span.stop]
        knock[b, :k, row.arm.keys] = True
    return base, knock


def _rows_of(mask: Bool[Tensor, "batch query_pos key_pos"]) -> Callable[[int, int], Tensor]:
    """``blocked(q, K)`` for :func:`attention_block_hooks`: the forward's ``q`` query rows over its ``K`` keys."""
    return lambda q, k: mask[:, mask.shape[1] - q :, :k]


def _knocked_logits(
    model: Any, layout: TokenLayout, mode: Mode, cache: Any, rows: Sequence[_Row]
) -> Float[Tensor, "batch query_pos d_vocab"]:
    """One forward of ``rows`` after the run's cache: each row feeds its step's siblings with its arm knocked out.

    The knock-out applies on the layers of the row's block only: a layer's mask is the base mask of its
    window, plus the knock-out of the rows whose block holds it.
    """
    backend = backend_for(model)
    width = max(len(layout.step_range(r.arm.step)) for r in rows)
    n = len(layout)
    windows = backend.attention_windows()
    base, knock = _row_masks(layout, mode, rows, width, list(dict.fromkeys(windows)))
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    shared = layout.positions("shared")
    positions = torch.zeros(len(rows), n + width, dtype=shared.dtype)
    positions[:, :n] = shared  # every key column has one: a HookedTransformer turns the cached keys again each forward
    for b, row in enumerate(rows):
        span = layout.step_range(row.arm.step)
        ids = list(layout.token_ids[span.start : span.stop])
        tokens[b] = torch.tensor(ids + [ids[-1]] * (width - len(ids)))
        step_positions = shared[span.start : span.stop]
        positions[b, n:] = torch.cat([step_positions, step_positions[-1:].expand(width - len(ids))])
    thirds = layer_blocks(len(windows))
    hooks = tempo_position_hooks(model, positions)
    groups: dict[tuple[int | None, Block], list[int]] = {}
    for third in ("early", "middle", "late"):
        for layer in thirds[third]:
            groups.setdefault((windows[layer], third), []).append(layer)
    for (window, third), layers in groups.items():
        knocked_here = torch.tensor([r.block in ("all", third) for r in rows])[:, None, None]
        mask = base[window] | (knock & knocked_here)
        hooks += attention_block_hooks(model, _rows_of(mask), layers)
    repeated = backend.repeat_cache(cache, len(rows))
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        return backend.forward_step(tokens.tolist(), repeated).float().cpu()


def knockout_blocks(
    model: Any,
    layout: TokenLayout,
    mode: Mode,
    threshold: float,
    max_parallel: int,
    next_token_source: str = "mixture",
    blocks: Sequence[Block] = ("all",),
    seed: int = 0,
    batch_rows: int = BATCH_ROWS,
) -> list[StepKnockout]:
    """Every arm at every step with earlier parallel keys and a matched control, on the layers of each block of ``blocks``.

    A step without a matched control is not replayed: :func:`summarise_run` reads only steps with both arms.
    One unablated forward of the run fills a KV cache; then each (step, arm, block) is one batch row that
    feeds only its step's siblings after that cache, ``batch_rows`` rows a forward. The matched keys are
    drawn once per step (``seed``) and shared by the blocks.
    """
    for block in blocks:
        if block not in BLOCKS:
            raise InvalidInputError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    if batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be at least 1, got {batch_rows}")
    steps = knockout_steps(layout)
    arms = _arms(layout, steps, seed)  # matched keys drawn for every such step, in order, so a seed means one draw
    controlled = {a.step for a in arms if a.arm == "matched"}
    arms = [a for a in arms if a.step in controlled]  # a step without a matched control enters no summary
    steps = sorted(controlled)
    if not steps:
        return []
    baseline, cache = baseline_forward(model, layout, mode)
    rows = [_Row(arm, block) for block in blocks for arm in arms if arm.arm != "sink" or block == "all"]
    order = sorted(range(len(rows)), key=lambda i: len(layout.step_range(rows[i].arm.step)))  # rows of one width together
    references = {s: _reference(layout, s, baseline, threshold, max_parallel, next_token_source) for s in steps}
    measured: dict[int, StepKnockout] = {}
    for first in range(0, len(order), batch_rows):
        chunk = order[first : first + batch_rows]
        logits = _knocked_logits(model, layout, mode, cache, [rows[i] for i in chunk])
        for b, i in enumerate(chunk):
            row = rows[i]
            k = len(layout.step_range(row.arm.step))
            reference = references[row.arm.step]
            measured[i] = _measure(
                layout, row.arm, row.block, reference, logits[b, :k], threshold, max_parallel, next_token_source
            )
    return [measured[i] for i in range(len(rows))]


def knockout_run(
    model: Any,
    layout: TokenLayout,
    mode: Mode,
    threshold: float,
    max_parallel: int,
    next_token_source: str = "mixture",
    block: Block = "all",
    seed: int = 0,
    batch_rows: int = BATCH_ROWS,
) -> list[StepKnockout]:
    """:func:`knockout_blocks` on one block; see the module docstring."""
    return knockout_blocks(model, layout, mode, threshold, max_parallel, next_token_source, (block,), seed, batch_rows)


@dataclass(frozen=True)
class _Reference:
    """A step's unablated next-token distribution and the kept set it gives: what each of its arms is measured against."""

    distribution: Float[Tensor, " d_vocab"]
    kept: frozenset[int]


def _reference(
    layout: TokenLayout, step: int, baseline: Float[Tensor, "pos d_vocab"], threshold: float, max_parallel: int, source: str
) -> _Reference:
    rows = layout.step_range(step)
    p = next_distribution(baseline[rows.start : rows.stop], [layout.probs[i] for i in rows], source)
    return _Reference(p, frozenset(select_siblings(p, threshold, max_parallel)[0]))


def _measure(
    layout: TokenLayout,
    arm: _Arm,
    block: Block,
    reference: _Reference,
    knocked: Float[Tensor, "sibling d_vocab"],
    threshold: float,
    max_parallel: int,
    source: str,
) -> StepKnockout:
    q = next_distribution(knocked, [layout.probs[i] for i in layout.step_range(arm.step)], source)
    kept_q = frozenset(select_siblings(q, threshold, max_parallel)[0])
    kl = kl_divergence(reference.distribution, q)
    return StepKnockout(arm.step, arm.arm, block, len(arm.keys), kl, reference.kept != kept_q, arm.distance_gap)


def summarise_run(records: Sequence[StepKnockout], block: Block = "all") -> RunKnockout | None:
    """Mean KL and kept-set change share per arm over the steps where every arm was measured; None without any."""
    chosen = [r for r in records if r.block == block]
    by_step: dict[int, dict[str, StepKnockout]] = {}
    for r in chosen:
        by_step.setdefault(r.step, {})[r.arm] = r
    complete = {s: arms for s, arms in by_step.items() if "parallel" in arms and "matched" in arms}
    if not complete:
        return None
    mean_kl: dict[str, float] = {}
    changed: dict[str, float] = {}
    for arm in ARMS:
        values = [arms[arm] for arms in complete.values() if arm in arms]
        if values:
            mean_kl[arm] = float(np.mean([v.kl for v in values]))
            changed[arm] = float(np.mean([v.kept_changed for v in values]))
    control = mean_kl["matched"]
    ratio = mean_kl["parallel"] / control if control >= KL_FLOOR else None
    if ratio is not None and not math.isfinite(ratio):
        ratio = None
    return RunKnockout(block, len(complete), mean_kl, changed, ratio, mean_kl["parallel"] - control)
