"""User nnsight code inside each step's trace, remote execution's checks, and the remote dry run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tempo_lens.generation.explicit import dry_run
from tempo_lens.generation import generate, generate_batch
from tests.helpers import TINY_PROMPT, TOP3, hf_eager, hf_oracle_logits, max_step_delta


def test_an_edit_changes_which_tokens_are_kept(tiny_nnsight, tiny_dirs):
    model = tiny_nnsight["llama"]
    plain = generate(model, TINY_PROMPT, max_steps=3, threshold=0.2, max_parallel=3)
    forced = 50
    assert forced not in plain.layout.token_ids[len(TINY_PROMPT) :]

    def boost(traced, siblings):  # after the prompt's forward, token 50 takes (almost) all the probability
        if siblings[0].step == -1:
            traced.lm_head.output[:, -1, forced] = 1e4

    edited = generate(model, TINY_PROMPT, max_steps=3, threshold=0.2, max_parallel=3, intervene=boost)
    assert edited.steps[0].token_ids == [forced]
    assert edited.layout.token_ids[: len(TINY_PROMPT)] == TINY_PROMPT


def test_per_sibling_save_of_a_module_output(tiny_nnsight, tiny_dirs):
    """Each sibling's layer-1 residual, saved inside the trace, equals HF's hidden state of that token."""
    model = tiny_nnsight["llama"]
    saved: dict[int, list] = {}

    def keep(traced, siblings):
        for s in siblings:
            if s.step >= 0:
                saved[s.step] = [traced.model.layers[1].output[s.lane, s.queries.start + k].save() for k in range(len(s.ids))]

    result = generate(model, TINY_PROMPT, max_steps=3, mode="isolated", intervene=keep, **TOP3)
    layout = result.layout
    hf = hf_eager(tiny_dirs["llama"])
    from tests.helpers import reference_mask

    with torch.no_grad():
        states = hf(
            input_ids=torch.tensor([layout.token_ids]), position_ids=torch.tensor(layout.logical_positions)[None],
            attention_mask=reference_mask(layout, "isolated")[None, None], output_hidden_states=True,
        ).hidden_states[2][0]  # after layer 1
    assert sorted(saved) == [0, 1, 2]
    for step, rows in saved.items():
        r = layout.step_range(step)
        assert len(rows) == len(r) == 3
        for k, row in zip(r, rows):
            assert (torch.as_tensor(row) - states[k]).abs().max().item() < 1e-4


def test_batched_intervene_sees_every_row(tiny_nnsight):
    seen: list[tuple[int, int]] = []
    generate_batch(tiny_nnsight["qwen2"], [TINY_PROMPT, [1, 9, 4]], max_steps=2, intervene=lambda m, s: seen.extend((x.row, x.step) for x in s), **TOP3)
    assert seen == [(0, -1), (1, -1), (0, 0), (1, 0), (0, 1), (1, 1)]


def test_dry_run_matches_cached_generation_and_counts_traffic(tiny_nnsight, tiny_dirs):
    model = tiny_nnsight["gemma3"]
    cached = generate(model, TINY_PROMPT, max_steps=4, capture=True, keep_logits=True, **TOP3)
    result, traffic = dry_run(model, TINY_PROMPT, max_steps=4, capture=True, keep_logits=True, **TOP3)
    assert result.layout.token_ids == cached.layout.token_ids
    assert max_step_delta(result, hf_oracle_logits(hf_eager(tiny_dirs["gemma3"]), result.layout, "isolated")) < 1e-4
    for step in range(4):
        assert abs(result.capture[step].__array__() - cached.capture[step].__array__()).max() < 1e-5
    layout, cfg = result.layout, model.cfg
    assert [t.step for t in traffic] == [-1, 0, 1, 2, 3] and all(t.traces == 1 for t in traffic)
    ends = [len(TINY_PROMPT)] + [layout.step_range(s).stop for s in range(4)]
    assert [t.tokens for t in traffic] == ends
    for t, k in zip(traffic, ends):
        q = len(TINY_PROMPT) if t.step < 0 else 3
        attention = 0 if t.step < 0 else cfg.n_layers * cfg.n_heads * q * k * 4
        rows = 1 if t.step < 0 else q  # the prompt's forward brings back its last row only
        assert t.bytes_saved == rows * cfg.d_vocab * 4 + attention
        assert t.bytes_sent == 2 * k * 8 + 2 * k * k * 4  # ids, positions, two float masks (full and sliding)


REMOTE_SCRIPT = """
import os, sys, time, warnings
warnings.simplefilter("ignore")
from tempo_lens import load_model
from tempo_lens.generation import generate
from tempo_lens.errors import TempoLensError

model = load_model(sys.argv[1], backend="nnsight")
for key, repo in (("", None), ("test-key", None), ("test-key", "meta-llama/Llama-3.1-8B")):
    os.environ["NDIF_API_KEY"] = key
    if repo:
        model.repo_id = repo  # a hosted model's name
    start = time.monotonic()
    try:
        generate(model, [1, 17, 42], max_steps=2, remote=True)
    except TempoLensError as e:
        print(f"ERROR {time.monotonic() - start:.1f}s {e}")
"""


@pytest.mark.slow  # a fresh interpreter
def test_remote_without_network_fails_fast_and_clearly(tiny_dirs):
    """No key, a local folder, an unreachable host (port 9 here refuses at once): one clear line each, in seconds."""
    import os

    env = {**os.environ, "NDIF_HOST": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tiny_dirs["llama"])], capture_output=True, text=True, timeout=120, env=env
    )
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    lines = [line.split(" ", 2) for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 3, out
    assert lines[0][2].startswith("remote=True needs an NDIF API key")
    assert lines[1][2].startswith("remote=True runs a model hosted on NDIF")
    assert lines[2][2].startswith("cannot reach NDIF at http://127.0.0.1:9")
    assert all(float(seconds.rstrip("s")) < 10 for _, seconds, _ in lines)
