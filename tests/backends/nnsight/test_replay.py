"""Replay on the nnsight backend: the bridge's replay of the same layout, for every mask and position choice."""

from __future__ import annotations

import numpy as np
import pytest

from tempo_lens.errors import InvalidInputError
from tempo_lens.generation import generate
from tempo_lens.replaying import replay
from tests.helpers import TINY_PROMPT, TOP3


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_replay_matches_the_bridge(tiny_nnsight, tiny_bridges, arch):
    result = generate(tiny_bridges[arch], TINY_PROMPT, max_steps=4, **TOP3)
    result.layout.prune([len(TINY_PROMPT) + 1], at_step=1, score=0.1)
    for positions in ("shared", "unique"):
        for mask in ("isolated", "visible"):
            ours = replay(tiny_nnsight[arch], result.layout, positions=positions, mask=mask)
            theirs = replay(tiny_bridges[arch], result.layout, positions=positions, mask=mask)
            assert (ours.logits - theirs.logits).abs().max().item() < 1e-4
            for step in theirs.attention:
                assert np.abs(ours.attention[step] - theirs.attention[step]).max() < 1e-5


def test_replay_refuses_what_needs_hook_points(tiny_nnsight):
    result = generate(tiny_nnsight["llama"], TINY_PROMPT, max_steps=2, **TOP3)
    with pytest.raises(InvalidInputError, match="backend='bridge'"):
        replay(tiny_nnsight["llama"], result.layout, run_with_cache=True)
    from tempo_lens.hooks import fractional_positions

    with pytest.raises(InvalidInputError, match="fractional"):
        replay(tiny_nnsight["llama"], result.layout, positions=fractional_positions(result.layout))
