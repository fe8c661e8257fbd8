"""Sibling selection and the next distribution against their float64 and weighted-sum definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.generation.steps import float32_at_least, next_distribution, select_siblings


def _reference_selection(probs: torch.Tensor, threshold: float, max_parallel: int) -> tuple[list[int], int]:
    """The definition: every recorded probability compared with the threshold in float64."""
    recorded = probs.to(torch.float64)
    above = int((recorded >= threshold).sum())
    k = min(max(above, 1), max_parallel)
    return [int(i) for i in torch.topk(probs, k).indices], above


def test_float32_at_least_decides_as_a_float64_comparison():
    rng = np.random.default_rng(0)
    values = rng.random(2000).astype(np.float32)
    thresholds = [float(v) for v in values[:200]]  # exactly representable
    thresholds += [float(v) * (1 + 3e-8) for v in values[:200]] + [float(v) * (1 - 3e-8) for v in values[:200]]
    thresholds += [float(np.nextafter(v, np.float32(1))) for v in values[:100]] + [1.0, 1e-6, 0.1, 1 / 3]
    for threshold in thresholds:
        limit = float32_at_least(threshold)
        assert np.float32(limit) == limit and limit >= threshold
        expected = values.astype(np.float64) >= threshold
        assert np.array_equal(values >= np.float32(limit), expected), threshold


@pytest.mark.parametrize("seed", range(5))
def test_selection_equals_the_float64_definition_at_recorded_probabilities(seed):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(5000, generator=generator) * 4, dim=-1)
    top = torch.topk(probs, 6).values.tolist()
    for p in top:
        for threshold in (p, p * (1 + 3e-8), p * (1 - 3e-8), float(np.nextafter(np.float32(p), np.float32(0)))):
            ids, kept, above = select_siblings(probs, threshold, max_parallel=4)
            assert (ids, above) == _reference_selection(probs, threshold, 4)
            assert kept == [float(probs[i]) for i in ids]


def test_selection_of_float64_probabilities_compares_in_float64():
    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    assert select_siblings(probs, 0.3, 3)[0] == [0, 1]
    assert select_siblings(probs, 0.3 + 1e-12, 3)[0] == [0]


def test_one_row_is_its_own_mixture_bit_for_bit():
    logits = torch.randn(1, 300, generator=torch.Generator().manual_seed(1)) * 3
    rows = torch.softmax(logits, dim=-1)
    weights = torch.tensor([0.37]) / torch.tensor([0.37]).sum()
    assert torch.equal(next_distribution(logits, [0.37], "mixture"), (weights[:, None] * rows).sum(0))
    two = torch.randn(2, 300, generator=torch.Generator().manual_seed(2))
    mixed = next_distribution(two, [0.6, 0.2], "mixture")
    expected = 0.75 * torch.softmax(two[0], -1) + 0.25 * torch.softmax(two[1], -1)
    assert torch.allclose(mixed, expected, atol=1e-7) and not torch.equal(mixed, torch.softmax(two[0], -1))
