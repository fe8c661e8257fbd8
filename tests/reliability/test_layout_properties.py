"""Property-based invariants of the token layout, its masks and its positions (hypothesis).

Layouts are built directly (no model): a random prompt, random step sizes, and random *valid* pruning
decisions (a parallel set of step s collapses to its first sibling at some step p with s < p <= last
step, at most once), applied in the order generation applies them: step p is appended, its forward
runs, then the sets chosen for p are pruned.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tempo_lens.hooks import fractional_positions
from tempo_lens.layout import NOT_PRUNED, PROMPT_STEP, TokenLayout
from tests.helpers import reference_mask

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ("isolated", "visible")


@st.composite
def layouts(draw, max_prompt: int = 6, max_steps: int = 6, max_siblings: int = 5):
    """(layout, the mask each step's forward saw at the time, {set step: prune step})."""
    n_prompt = draw(st.integers(1, max_prompt))
    sizes = draw(st.lists(st.integers(1, max_siblings), min_size=0, max_size=max_steps))
    last = len(sizes) - 1
    decisions: dict[int, int] = {}
    for s, size in enumerate(sizes):
        if size >= 2 and s < last and draw(st.booleans()):
            decisions[s] = draw(st.integers(s + 1, last))
    layout = TokenLayout.from_prompt(draw(st.lists(st.integers(0, 95), min_size=n_prompt, max_size=n_prompt)))
    seen = {mode: [] for mode in MODES}
    for p, size in enumerate(sizes):
        ids = draw(st.lists(st.integers(0, 95), min_size=size, max_size=size))
        probs = sorted(draw(st.lists(st.floats(1e-6, 1.0), min_size=size, max_size=size)), reverse=True)
        r = layout.append_step(ids, probs)
        for mode in MODES:  # what the step's cached forward (q new tokens over K keys) sees
            seen[mode].append(layout.blocked(mode, n_queries=len(r), n_keys=r.stop).clone())
        for s, at in decisions.items():
            if at == p:
                layout.prune(list(layout.step_range(s))[1:], at_step=p, score=0.1 * (s + 1))
    return layout, seen, decisions


# ---- masks ---------------------------------------------------------------------------------------

@PROPERTY
@given(layouts())
def test_mask_matches_loop_built_reference(case):
    layout, _, _ = case
    for mode in MODES:
        expected = torch.isinf(reference_mask(layout, mode))
        assert torch.equal(layout.blocked(mode), expected)
        additive = layout.additive_mask(mode)
        assert torch.equal(torch.isneginf(additive), expected) and bool((additive[~expected] == 0).all())


@PROPERTY
@given(layouts())
def test_mask_is_causal_and_keeps_own_key(case):
    layout, _, _ = case
    n = len(layout)
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    for mode in MODES:
        blocked = layout.blocked(mode)
        assert bool(blocked[future].all()), "a query sees a later key"
        assert not bool(blocked.diagonal().any()), "a query lost its own key"
        assert bool((~blocked).any(dim=1).all()), "a query row is fully masked"
        assert bool((~blocked[:, 0]).sum() >= 1)


@PROPERTY
@given(layouts())
def test_isolation_blocks_exactly_same_step_siblings(case):
    layout, _, _ = case
    iso, vis = layout.blocked("isolated"), layout.blocked("visible")
    assert not bool((vis & ~iso).any()), "isolation unblocked something"
    steps = torch.tensor(layout.steps)
    n = len(layout)
    earlier = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
    siblings = (steps[:, None] == steps[None, :]) & (steps[:, None] != PROMPT_STEP) & earlier
    assert torch.equal(iso & ~vis, siblings)
    # and the prompt is plain causal in both modes
    P = layout.n_prompt
    assert torch.equal(iso[:P, :P], vis[:P, :P])
    assert torch.equal(vis[:P, :P], torch.triu(torch.ones(P, P, dtype=torch.bool), diagonal=1))


@PROPERTY
@given(layouts())
def test_pruned_keys_hidden_from_later_queries_only(case):
    layout, _, decisions = case
    assert sum(layout.is_pruned(i) for i in range(len(layout))) == sum(
        len(layout.step_range(s)) - 1 for s in decisions
    )
    for mode in MODES:
        full = layout.blocked(mode)
        unpruned = layout.blocked(mode, apply_pruning=False)
        assert not bool((unpruned & ~full).any()), "pruning unblocked something"
        for k in range(len(layout)):
            at = layout.pruned_at[k]
            query_steps = torch.tensor(layout.steps)
            if at == NOT_PRUNED:
                assert torch.equal(full[:, k], unpruned[:, k])
                continue
            later = query_steps > at
            assert bool(full[later, k].all()), f"pruned key {k} still visible after step {at}"
            # queries of steps <= at (the pruning step's own queries included) are untouched
            assert torch.equal(full[~later, k], unpruned[~later, k])
        for s in decisions:  # the survivor (first sibling) stays visible to later queries
            survivor = layout.step_range(s).start
            later = torch.tensor(layout.steps) > s
            assert not layout.is_pruned(survivor)
            assert not bool(full[later, survivor].any())


@PROPERTY
@given(layouts())
def test_hidden_keys_are_the_pruning_part_of_the_mask(case):
    layout, _, _ = case
    full, unpruned = layout.blocked("visible"), layout.blocked("visible", apply_pruning=False)
    for step in range(PROMPT_STEP, layout.n_steps + 1):
        hidden = layout.hidden_tensor(step)
        assert hidden.tolist() == [layout.is_hidden(k, step) for k in range(len(layout))]
        for query in (i for i, s in enumerate(layout.steps) if s == step):
            keys = torch.arange(len(layout)) < query  # earlier keys: causal masking plays no part
            assert torch.equal((full[query] & ~unpruned[query])[keys], hidden[keys])


@PROPERTY
@given(layouts())
def test_cached_slices_equal_rows_of_the_full_mask(case):
    layout, seen, _ = case
    P = layout.n_prompt
    for mode in MODES:
        full = layout.blocked(mode)
        assert torch.equal(layout.blocked(mode, n_queries=P, n_keys=P), full[:P, :P])
        for step in range(layout.n_steps):
            r = layout.step_range(step)
            now = layout.blocked(mode, n_queries=len(r), n_keys=r.stop)
            assert now.shape == (len(r), r.stop)
            assert torch.equal(now, full[r.start : r.stop, : r.stop])
            # pruning decided at or after a step never changes what that step's forward saw
            assert torch.equal(seen[mode][step], now)
        for q in range(1, len(layout) + 1):  # any trailing window, e.g. a replay of the last tokens
            assert torch.equal(layout.blocked(mode, n_queries=q), full[len(layout) - q :])


# ---- positions -------------------------------------------------------------------------------------

@PROPERTY
@given(layouts())
def test_positions_shared_within_a_step_and_advance_by_one(case):
    layout, _, _ = case
    P = layout.n_prompt
    shared = layout.positions("shared")
    assert shared.dtype == torch.float32
    assert shared[:P].tolist() == list(range(P))
    assert layout.positions("unique").tolist() == list(range(len(layout)))
    for step in range(layout.n_steps):
        values = {layout.logical_positions[i] for i in layout.step_range(step)}
        assert values == {P + step}
    assert layout.next_logical_position == P + layout.n_steps
    assert sum(layout.step_sizes()) == len(layout) - P
    with pytest.raises(ValueError, match="unknown positions"):
        layout.positions("physical")


@PROPERTY
@given(layouts(), st.sampled_from([1e-3, 1e-2, 0.1]))
def test_fractional_positions_round_trip(case, spacing):
    layout, _, _ = case
    frac = fractional_positions(layout, spacing=spacing)
    assert frac.shape == (len(layout),)
    assert torch.equal(torch.floor(frac), layout.positions("shared")), "floor must give the logical position"
    assert bool((frac[1:] > frac[:-1]).all()), "physical order (sibling rank) must be position order"
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        values = frac[r.start : r.stop]
        assert len(set(values.tolist())) == len(r)
        ranks = ((values - values.floor()) / spacing).round().long().tolist()
        assert ranks == list(range(len(r)))


@settings(max_examples=15, deadline=None)
@given(st.integers(2_000, 40_000), st.integers(2, 8))
def test_fractional_positions_stay_distinct_or_refuse_far_into_the_context(n_prompt, siblings):
    """float32 positions lose 1e-3 resolution past ~8k; the result must stay distinct or be refused."""
    from tempo_lens.errors import InvalidInputError

    layout = TokenLayout.from_prompt([5] * n_prompt)
    layout.append_step(list(range(siblings)), [1.0 / siblings] * siblings)
    try:
        frac = fractional_positions(layout)
    except InvalidInputError as exc:
        assert "spacing" in str(exc)
        return
    values = frac[n_prompt:]
    assert len(set(values.tolist())) == siblings
    assert torch.equal(torch.floor(values), torch.full((siblings,), float(n_prompt)))


# ---- persistence and validation ---------------------------------------------------------------------

@PROPERTY
@given(layouts())
def test_to_dict_from_dict_round_trip_through_json(case):
    layout, _, _ = case
    data = json.loads(json.dumps(layout.to_dict(), allow_nan=False))  # NaN must not reach the JSON
    again = TokenLayout.from_dict(data)
    assert again.to_dict() == layout.to_dict()
    for a, b in zip(again.probs + again.prune_scores, layout.probs + layout.prune_scores):
        assert (math.isnan(a) and math.isnan(b)) or a == b
    for mode in MODES:
        assert torch.equal(again.blocked(mode), layout.blocked(mode))
    assert again.n_steps == layout.n_steps and again.step_sizes() == layout.step_sizes()


CORRUPTIONS = ("skip_step", "position_off", "prompt_after_step", "prune_own_step", "prune_future",
               "step_backwards", "column_short", "missing_key")


@PROPERTY
@given(layouts(), st.sampled_from(CORRUPTIONS), st.data())
def test_validate_rejects_corrupted_layouts(case, corruption, data):
    layout, _, _ = case
    d = layout.to_dict()
    P = layout.n_prompt
    generated = list(range(P, len(layout)))
    needs_steps = corruption in ("skip_step", "prompt_after_step", "prune_own_step", "prune_future", "step_backwards")
    if needs_steps and not generated:
        corruption = "position_off"
    if corruption == "step_backwards" and layout.n_steps < 2:
        corruption = "skip_step"
    if corruption == "skip_step":  # the step numbers jump by 2 at the start of some step
        i = data.draw(st.sampled_from([layout.step_range(s).start for s in range(layout.n_steps)]))
        d["steps"][i:] = [s + 1 for s in d["steps"][i:]]
        d["logical_positions"][i:] = [p + 1 for p in d["logical_positions"][i:]]
    elif corruption == "position_off":
        i = data.draw(st.integers(0, len(layout) - 1))
        d["logical_positions"][i] += data.draw(st.sampled_from([-1, 1, 7]))
    elif corruption == "prompt_after_step":  # a prompt token after generated ones
        i = data.draw(st.integers(P + 1, len(layout)))
        for key, value in (("steps", PROMPT_STEP), ("logical_positions", i), ("token_ids", 3), ("probs", None),
                           ("pruned_at", NOT_PRUNED), ("prune_scores", None)):
            d[key].insert(i, value)
    elif corruption == "prune_own_step":
        i = data.draw(st.sampled_from(generated))
        d["pruned_at"][i] = d["steps"][i]
    elif corruption == "prune_future":
        i = data.draw(st.integers(0, len(layout) - 1))
        d["pruned_at"][i] = layout.n_steps + data.draw(st.integers(0, 3))
    elif corruption == "step_backwards":
        last = layout.step_range(layout.n_steps - 1)
        d["steps"].append(layout.n_steps - 2)
        d["logical_positions"].append(P + layout.n_steps - 2)
        for key, value in (("token_ids", 3), ("probs", 0.5), ("pruned_at", NOT_PRUNED), ("prune_scores", None)):
            d[key].append(value)
        assert last.stop == len(layout)
    elif corruption == "column_short":
        key = data.draw(st.sampled_from(sorted(d)))
        d[key] = d[key][:-1]
    elif corruption == "missing_key":
        del d[data.draw(st.sampled_from(sorted(d)))]
    with pytest.raises((ValueError, KeyError)):
        TokenLayout.from_dict(d)


def test_prune_refuses_invalid_decisions():
    layout = TokenLayout.from_prompt([1, 2, 3])
    layout.append_step([4, 5, 6], [0.5, 0.3, 0.2])
    layout.append_step([7, 8], [0.6, 0.4])
    with pytest.raises(ValueError, match="cannot be pruned at step 1"):
        layout.prune([7], at_step=1, score=0.1)  # a step's own siblings
    with pytest.raises(ValueError, match="cannot be pruned"):
        layout.prune([4], at_step=0, score=0.1)
    # a refused decision changes nothing, even when its first tokens were valid
    before, version = layout.to_dict(), layout.version
    with pytest.raises(ValueError, match="cannot be pruned"):
        layout.prune([4, 5, 7], at_step=1, score=0.1)
    assert layout.to_dict() == before and layout.version == version
    with pytest.raises(ValueError, match="cannot prune at step 2"):  # a step that has not run yet
        layout.prune([4], at_step=2, score=0.1)
    with pytest.raises(ValueError, match="listed twice|already pruned"):
        layout.prune([4, 4], at_step=1, score=0.1)
    assert layout.to_dict() == before and layout.version == version
    layout.prune([4, 5], at_step=1, score=0.1)
    with pytest.raises(ValueError, match="already pruned"):
        layout.prune([4], at_step=1, score=0.1)
    with pytest.raises(ValueError, match="at least one token"):
        layout.append_step([], [])
    with pytest.raises(ValueError, match="one probability per token"):
        layout.append_step([1, 2], [0.5])
    with pytest.raises(ValueError, match="unknown mode"):
        layout.blocked("both")
    with pytest.raises(IndexError, match="no step 5"):
        layout.step_range(5)
