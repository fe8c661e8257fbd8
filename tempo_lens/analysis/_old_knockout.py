"""The attention knock-out: what attention to earlier parallel keys does to the next token.

For every step whose queries can see earlier parallel tokens, the run is replayed through the hooks
three more times, each removing one set of keys from that step's queries (scores set to ``-inf``,
then renormalised by the softmax), on the layers of one block:

- ``"parallel"``: every visible key of an earlier step that kept two or more siblings;
- ``"matched"``: as many visible non-parallel *generated* keys, each drawn (fixed seed) among those
  nearest in logical distance to one parallel key, so distance and token kind are held fixed;
- ``"sink"``: the first token alone, to scale the other two.

Each arm is measured by the KL divergence of the step's next-token distribution (the run's own
``next_token_source`` over the step's rows) from the unablated replay's, and by whether the kept set
(the run's threshold and ``max_parallel``) changes. The run's own replay is the baseline, so the
comparison shares one computation path. Steps are replayed in batches: row ``b`` of a forward carries
one (step, arm) pair's mask, and only that step's rows are read from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..backends import backend_for
from ..errors import InvalidInputError
from ..generation.steps import next_distribution, select_siblings
from ..hooks import attention_block_hooks, tempo_position_hooks
from ..layout import Mode, TokenLayout

Arm = Literal["parallel", "matched", "sink"]
ARMS: tuple[Arm, ...] = get_args(Arm)
Block = Literal["all", "early", "middle", "late"]
BLOCKS: tuple[Block, ...] = get_args(Block)
BATCH_ROWS = 8  # (step, arm) replays per forward


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
    support = p64 > 0
    return float((p64[support] * (p64[support].log() - q64[support].clamp_min(1e-300).log())).sum())


@dataclass(frozen=True)
class _Arm:
    step: int
    arm: Arm
    keys: list[int]
    distance_gap: float


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


def _logits_of_rows(
    model: Any,
    layout: TokenLayout,
    base: Bool[Tensor, "pos pos"],
    knocks: list[Bool[Tensor, "pos pos"]],
    layers: list[int],
    length: int | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """One batched replay of the first ``length`` tokens (default: all): every row the same tokens and base mask;
    row b also blocks ``knocks[b]`` on ``layers``. A step's rows see no later token, so feeding the tokens up to
    its last sibling gives its logits."""
    backend = backend_for(model)
    n = len(layout) if length is None else length
    tokens = torch.tensor([layout.token_ids[:n]] * max(len(knocks), 1), dtype=torch.long, device=backend.device)
    stacked_base = base[:n, :n].expand(tokens.shape[0], n, n)
    stacked_knock = torch.stack([k[:n, :n] for k in knocks]) if knocks else torch.zeros_like(stacked_base)
    positions = layout.positions("shared")[:n].expand(tokens.shape[0], n)
    hooks = tempo_position_hooks(model, positions)
    hooks += attention_block_hooks(model, lambda q, k: stacked_base[:, k - q : k, :k])
    if knocks and layers:
        hooks += attention_block_hooks(model, lambda q, k: stacked_knock[:, k - q : k, :k], layers)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        return backend.forward(tokens).float().cpu()


def baseline_logits(model: Any, layout: TokenLayout, mode: Mode) -> Float[Tensor, "pos d_vocab"]:
    """The run's own replay, unablated: the reference every arm's KL is taken from."""
    return _logits_of_rows(model, layout, layout.blocked(mode), [], [])[0]


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
    baseline: Float[Tensor, "pos d_vocab"] | None = None,
) -> list[StepKnockout]:
    """Every arm at every step with earlier parallel keys, on the layers of ``block``; see the module docstring.

    ``baseline``: the unablated replay's logits (:func:`baseline_logits`), when the caller shares one over blocks.
    """
    if block not in BLOCKS:
        raise InvalidInputError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    if batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be at least 1, got {batch_rows}")
    steps = knockout_steps(layout)
    if not steps:
        return []
    layers = layer_blocks(int(model.cfg.n_layers))[block]
    base = layout.blocked(mode)
    if baseline is None:
        baseline = baseline_logits(model, layout, mode)
    arms = _arms(layout, steps, seed)  # in step order, so a batch's replay stops soon after its last step
    records: list[StepKnockout] = []
    for first in range(0, len(arms), batch_rows):
        chunk = arms[first : first + batch_rows]
        knocks = []
        for arm in chunk:
            knock = torch.zeros(len(layout), len(layout), dtype=torch.bool)
            rows = layout.step_range(arm.step)
            knock[rows.start : rows.stop, arm.keys] = True
            knocks.append(knock)
        length = max(layout.step_range(arm.step).stop for arm in chunk)
        logits = _logits_of_rows(model, layout, base, knocks, layers, length)
        for row, arm in enumerate(chunk):
            records.append(_measure(layout, arm, block, baseline, logits[row], threshold, max_parallel, next_token_source))
    return records


def _measure(
    layout: TokenLayout,
    arm: _Arm,
    block: Block,
    baseline: Float[Tensor, "pos d_vocab"],
    knocked: Float[Tensor, "pos d_vocab"],
    threshold: float,
    max_parallel: int,
    source: str,
) -> StepKnockout:
    rows = layout.step_range(arm.step)
    probs = [layout.probs[i] for i in rows]
    p = next_distribution(baseline[rows.start : rows.stop], probs, source)
    q = next_distribution(knocked[rows.start : rows.stop], probs, source)
    kept_p = set(select_siblings(p, threshold, max_parallel)[0])
    kept_q = set(select_siblings(q, threshold, max_parallel)[0])
    return StepKnockout(arm.step, arm.arm, block, len(arm.keys), kl_divergence(p, q), kept_p != kept_q, arm.distance_gap)


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
