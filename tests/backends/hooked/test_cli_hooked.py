"""`tempo-lens generate --backend hooked --json` on the default model against the HF oracle at every step."""

from __future__ import annotations

import json

import pytest
import torch

from tempo_lens.cli import main
from tempo_lens.generation import next_distribution
from tempo_lens.layout import TokenLayout
from tests.helpers import hf_oracle_logits


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_cli_json_probabilities_match_the_oracle(embedded_hooked, embedded_hf, mode, capsys, monkeypatch):
    import tempo_lens.models.loading

    asked = []
    monkeypatch.setattr(tempo_lens.models.loading, "load_model", lambda *args, **kwargs: asked.append(kwargs) or embedded_hooked)
    code = main(["generate", "The cat sat on the", "--backend", "hooked", "--json", "--threshold", "0.05",
                 "--max-steps", "6", "--mode", mode])
    assert code == 0 and asked[0]["backend"] == "hooked"
    record = json.loads(capsys.readouterr().out)
    layout = TokenLayout.from_prompt(record["prompt_token_ids"])
    for step in record["steps"]:
        layout.append_step(step["token_ids"], step["probs"])
    assert max(layout.step_sizes()) >= 2, "the check needs a parallel step"
    oracle = hf_oracle_logits(embedded_hf, layout, mode)
    previous_rows, previous_probs = oracle[layout.n_prompt - 1 : layout.n_prompt], [1.0]
    for s, step in enumerate(record["steps"]):
        distribution = next_distribution(previous_rows, previous_probs, record["next_token_source"])
        expected = distribution[torch.tensor(step["token_ids"])]
        assert (expected - torch.tensor(step["probs"])).abs().max().item() < 1e-4, f"step {s}"
        r = layout.step_range(s)
        previous_rows, previous_probs = oracle[r.start : r.stop], step["probs"]
