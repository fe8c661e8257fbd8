"""Replay conditions: an unpruned replay is the HF oracle over the same tokens with nothing pruned."""

from __future__ import annotations

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
        logits = cached_replay(tiny_llama, run.layout, condition).logits
        assert (logits - hf_oracle_logits(llama_hf, layout, "isolated")).abs().max().item() < 1e-4
    assert Condition("visible", "unique", pruned=False).label == "visible, unique, unpruned"
