"""The sibling tools on a HookedTransformer give what they give on the bridge over the same weights."""

from __future__ import annotations

import pandas as pd
import pytest

from tempo_lens.tools import activation_patching, direct_logit_attribution, logit_lens
from tests.tools.conftest import tiny_run


@pytest.fixture(scope="module")
def both(tiny_hooked, tiny_bridges):
    hooked, bridge = tiny_hooked["llama"], tiny_bridges["llama"]
    run = tiny_run(bridge)
    assert tiny_run(hooked).layout.token_ids == run.layout.token_ids
    return hooked, bridge, run


def _close(a: pd.DataFrame, b: pd.DataFrame, columns: list[str], atol: float) -> None:
    assert len(a) == len(b) > 0
    for column in columns:
        assert (a[column].to_numpy() - b[column].to_numpy()).__abs__().max() < atol, column


def test_logit_lens(both):
    hooked, bridge, run = both
    _close(logit_lens(hooked, run), logit_lens(bridge, run), ["prob", "kl_to_final"], 1e-4)


def test_activation_patching(both):
    hooked, bridge, run = both
    _close(activation_patching(hooked, run, "all", layers=[0, 2]), activation_patching(bridge, run, "all", layers=[0, 2]),
           ["value", "source_value", "target_value"], 1e-4)


def test_direct_logit_attribution(both):
    hooked, bridge, run = both
    a, b = direct_logit_attribution(hooked, run, steps=[1]), direct_logit_attribution(bridge, run, steps=[1])
    # HookedTransformer keeps a zero attention-output bias for Llama (the bridge has none): a term that adds nothing
    zero_bias = (a.component == "attn_bias") & (a.attribution == 0.0)
    assert zero_bias.sum() == len(a) - len(b)
    _close(a[~zero_bias].reset_index(drop=True), b, ["attribution", "logit"], 1e-3)
