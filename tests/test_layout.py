"""TokenLayout.truncate: the layout rolls back to an earlier state and memoised tensors follow it."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.errors import InvalidInputError
from tempo_lens.hooks import layout_blocked_fn
from tempo_lens.layout import TokenLayout


def _layout_with_steps(sizes, prune_at=None) -> TokenLayout:
    layout = TokenLayout.from_prompt([1, 10, 11])
    for step, size in enumerate(sizes):
        layout.append_step([20 + 3 * step + i for i in range(size)], [0.5 / (i + 1) for i in range(size)])
        if prune_at is not None and step == prune_at:
            layout.prune([4], at_step=step, score=0.25)  # the second sibling of step 0
    return layout


def test_truncate_equals_the_layout_built_without_the_later_steps():
    layout = _layout_with_steps([2, 1, 3], prune_at=1)
    assert layout.is_pruned(4)
    layout.truncate(5)  # prompt + step 0: step 1 (where token 4 was pruned) is gone, so is its pruning
    expected = _layout_with_steps([2])
    assert layout.to_dict() == expected.to_dict()
    layout.validate()
    assert layout.n_steps == 1 and layout.next_logical_position == 4 and not layout.is_pruned(4)

    kept = _layout_with_steps([2, 1, 3], prune_at=1)
    kept.truncate(6)  # prompt + steps 0, 1: the pruning at step 1 stays
    assert kept.to_dict() == _layout_with_steps([2, 1], prune_at=1).to_dict()


def test_truncate_bumps_the_version_so_memoised_masks_are_rebuilt():
    layout = _layout_with_steps([2])
    blocked = layout_blocked_fn(layout, "isolated")
    before = blocked(2, 5).clone()
    assert bool(before[1, 3])  # siblings 3 and 4 of step 0 cannot see each other
    version = layout.version
    layout.truncate(3)
    assert layout.version > version
    layout.append_step([30], [0.9])
    layout.append_step([31], [0.8])  # again 5 tokens and 2 queries, now two steps of one token
    fresh = _layout_with_steps([1, 1])
    assert torch.equal(blocked(2, 5), fresh.blocked("isolated", n_queries=2, n_keys=5))
    assert not bool(blocked(2, 5)[1, 3])
    assert torch.equal(layout.positions("shared"), torch.tensor([0.0, 1, 2, 3, 4]))


@pytest.mark.parametrize("n", [-1, 9, 4])
def test_truncate_refuses_out_of_range_and_mid_step_cuts(n):
    layout = _layout_with_steps([2, 1])  # 3 prompt tokens, step 0 at 3-4, step 1 at 5
    before = layout.to_dict(), layout.version
    with pytest.raises(ValueError, match="cannot truncate"):
        layout.truncate(n)
    assert (layout.to_dict(), layout.version) == before


def test_truncate_to_the_whole_layout_or_into_the_prompt():
    layout = _layout_with_steps([2])
    version = layout.version
    layout.truncate(len(layout))
    assert layout.to_dict() == _layout_with_steps([2]).to_dict() and layout.version == version
    layout.truncate(2)
    assert layout.to_dict() == TokenLayout.from_prompt([1, 10]).to_dict()


def test_columns_are_read_only_and_operations_bump_the_version():
    layout = TokenLayout.from_prompt([1, 2, 3])
    layout.append_step([4, 5], [0.6, 0.3])
    assert layout.token_ids == [1, 2, 3, 4, 5] and layout.token_ids + [6] == [1, 2, 3, 4, 5, 6]
    for edit in (lambda: layout.token_ids.append(9), lambda: layout.pruned_at.__setitem__(4, 0),
                 lambda: layout.probs.extend([1.0]), lambda: layout.steps.pop()):
        with pytest.raises(TypeError, match="read-only"):
            edit()
    with pytest.raises(AttributeError):
        layout.version = 7
    version = layout.version
    layout.append_step([6], [0.9])
    layout.prune([4], at_step=1, score=0.1)
    assert layout.version == version + 2 and layout.is_pruned(4)
    layout.unprune([4])
    assert not layout.is_pruned(4) and layout.version == version + 3


def test_str_is_a_table_of_every_token():
    """print(layout) shows one row per token (README: physical index -> step, logical position, parallel, pruned)."""
    layout = TokenLayout.from_prompt([1, 2])
    layout.append_step([5, 6], [0.6, 0.3])
    layout.append_step([7], [0.9])
    layout.prune([3], at_step=1, score=0.1)
    lines = str(layout).splitlines()
    assert lines[0].split() == ["physical", "step", "logical", "token_id", "prob", "parallel", "pruned"]
    assert len(lines) == 1 + len(layout)
    assert lines[1].split() == ["0", "-1", "0", "1"]
    assert lines[3].split() == ["2", "0", "2", "5", "0.6000", "yes"]
    assert lines[4].split() == ["3", "0", "2", "6", "0.3000", "yes", "at", "step", "1"]
    assert lines[5].split() == ["4", "1", "3", "7", "0.9000"]
    assert repr(layout).startswith("TokenLayout(")


@pytest.mark.parametrize("mode", ["isolated", "visible"])
@pytest.mark.parametrize("window", [1, 2, 4, 100])
def test_a_window_hides_keys_by_physical_distance(mode, window):
    """``blocked(window=w)`` equals the loop-by-loop oracle mask: j visible from i only when i - j < w."""
    from tests.helpers import reference_mask

    layout = TokenLayout.from_prompt([1, 10, 11, 12])
    for siblings in ([20, 21, 22], [23], [24, 25]):
        layout.append_step(siblings, [0.9 / len(siblings)] * len(siblings))
    layout.prune([5], at_step=1, score=0.1)
    expected = torch.isinf(reference_mask(layout, mode, window))
    assert torch.equal(layout.blocked(mode, window=window), expected)
    for q in (1, 2, 3):  # the rows of a cached forward of the last q tokens
        assert torch.equal(layout.blocked(mode, n_queries=q, window=window), expected[-q:])


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_a_window_must_be_a_positive_count(window):
    with pytest.raises(InvalidInputError, match="window must be a positive number"):
        TokenLayout.from_prompt([1, 2, 3]).blocked(window=window)
