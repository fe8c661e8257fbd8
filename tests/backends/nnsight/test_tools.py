"""The tools on the nnsight backend: the logit lens and residual differences equal the bridge's; the others refuse clearly."""

from __future__ import annotations

import numpy as np
import pytest

from tempo_lens.errors import InvalidInputError
from tempo_lens.generation import generate
from tempo_lens.tools import Condition, logit_lens, residual_difference
from tests.helpers import TINY_PROMPT, TOP3


@pytest.fixture(scope="module")
def run(tiny_bridges):
    return generate(tiny_bridges["llama"], TINY_PROMPT, max_steps=4, **TOP3)


def _numeric_close(ours, theirs, tol: float) -> None:
    assert list(ours.columns) == list(theirs.columns) and len(ours) == len(theirs) > 0
    for column in ours.columns:
        if ours[column].dtype.kind == "f":
            assert np.allclose(ours[column], theirs[column], atol=tol, rtol=0), column
        else:
            assert (ours[column] == theirs[column]).all(), column


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logit_lens_is_the_bridges(tiny_nnsight, tiny_bridges, arch):
    result = generate(tiny_bridges[arch], TINY_PROMPT, max_steps=4, **TOP3)
    for condition in (None, Condition("visible", "unique")):
        ours = logit_lens(tiny_nnsight[arch], result, condition=condition)
        theirs = logit_lens(tiny_bridges[arch], result, condition=condition)
        _numeric_close(ours, theirs, 1e-5)


def test_residual_difference_is_the_bridges(tiny_nnsight, tiny_bridges, run):
    ours = residual_difference(tiny_nnsight["llama"], run)
    theirs = residual_difference(tiny_bridges["llama"], run)
    _numeric_close(ours, theirs, 1e-4)


@pytest.mark.parametrize("hook", ["resid_pre", "attn_out", "mlp_out"])
def test_residual_difference_at_other_hooks_is_the_bridges(tiny_nnsight, tiny_bridges, run, hook):
    _numeric_close(residual_difference(tiny_nnsight["llama"], run, hook=hook), residual_difference(tiny_bridges["llama"], run, hook=hook), 1e-4)


@pytest.mark.parametrize("hook", ["resid_pre", "resid_post", "attn_out", "mlp_out"])
def test_activation_patching_is_the_bridges(tiny_nnsight, tiny_bridges, run, hook):
    from tempo_lens.tools import activation_patching

    where = [(1, 1), 2]
    ours = activation_patching(tiny_nnsight["llama"], run, where, hook=hook, batch_size=2)
    theirs = activation_patching(tiny_bridges["llama"], run, where, hook=hook, batch_size=2)
    _numeric_close(ours, theirs, 1e-4)


def test_tools_needing_hook_points_refuse(tiny_nnsight, run):
    from tempo_lens.tools import activation_patching, direct_logit_attribution

    with pytest.raises(InvalidInputError, match="backend='bridge'"):
        direct_logit_attribution(tiny_nnsight["llama"], run, steps=[1])
    with pytest.raises(InvalidInputError, match="backend='bridge'"):
        activation_patching(tiny_nnsight["llama"], run, [1], hook="z", layers=[0])
