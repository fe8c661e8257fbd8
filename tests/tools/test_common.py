"""Replay conditions: an unpruned replay is the HF oracle over the same tokens with nothing pruned."""

from __future__ import annotations

import pytest

from tempo_lens.backends import backend_for
from tempo_lens.pruning import AttentionPruning
from tempo_lens.tools import Condition
from tempo_lens.tools.common import cached_replay
from tests.helpers import hf_oracle_logits
from tests.tools.conftest import tiny_run


def test_unpruned_condition_replays_the_tokens_without_pruning(tiny_llama, llama_hf):
    run = tiny_run(tiny_llama, pruning=AttentionPruning(1.0))
    assert any(run.layout.is_pruned(i) for i in range(len(run.layout)))
    unpruned = run.layout.unpruned()
    assert not any(unpruned.is_pruned(i) for i in range(len(unpruned))) and unpruned.token_ids == run.layout.token_ids
    for condition, layout in ((Condition(pruned=False), unpruned), (Condition(), run.layout)):
        logits = cached_replay(backend_for(tiny_llama), run.layout, condition).logits
        assert (logits - hf_oracle_logits(llama_hf, layout, "isolated")).abs().max().item() < 1e-4
    assert Condition("visible", "unique", pruned=False).label == "visible, unique, unpruned"


def test_layer_indices_follow_one_rule():
    """Capture, replay, pruning and the tools read layer numbers alike: negatives count from the last, one message."""
    from types import SimpleNamespace

    from tempo_lens.capture import resolve_layers
    from tempo_lens.errors import InvalidInputError
    from tempo_lens.pruning import AttentionPruning
    from tempo_lens.tools.common import check_layers

    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=4))
    assert check_layers(model, [-1, 0]) == resolve_layers([-1, 0], 4) == [0, 3]
    assert AttentionPruning(layers=[-1, 0], layer_weights=[1.0, 2.0]).layers_for(4) == [3, 0]  # order kept: weights align
    refusals = (lambda: check_layers(model, [4]), lambda: AttentionPruning(layers=[4]).layers_for(4), lambda: resolve_layers([4], 4))
    for refuse in refusals:
        with pytest.raises(InvalidInputError, match=r"\[4\] outside 0\.\.3"):
            refuse()
