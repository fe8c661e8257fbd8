"""Your own HookedTransformer from a local folder, processing on or off, against load_model(backend="hooked")."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import generate
from tempo_lens.errors import InvalidInputError
from tests.helpers import TINY_PROMPT, TOP3

pytest.importorskip("transformer_lens")

IDS = torch.tensor([[1, 17, 42, 5, 63, 8, 9, 30]])


@pytest.fixture(scope="module")
def hooked_from_folder(tiny_hooked):  # tiny_hooked skips outside TransformerLens 3.x
    from tempo_lens.backends.hooked import hooked_from_folder

    return hooked_from_folder


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_unprocessed_equals_load_model(hooked_from_folder, tiny_hooked, tiny_dirs, arch):
    own = hooked_from_folder(tiny_dirs[arch], fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    with torch.no_grad():
        assert (own(IDS) - tiny_hooked[arch](IDS)).abs().max().item() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_processed_keeps_log_probabilities_and_every_choice(hooked_from_folder, tiny_hooked, tiny_dirs, arch):
    own = hooked_from_folder(tiny_dirs[arch])  # TransformerLens's defaults: fold, centre, fold value biases
    assert own.cfg.normalization_type in ("LNPre", "RMSPre")  # the norms were folded
    reference = tiny_hooked[arch]
    with torch.no_grad():
        a, b = own(IDS), reference(IDS)
    assert (a - b).abs().max().item() > 1e-3  # processing shifted the logits...
    assert (a.log_softmax(-1) - b.log_softmax(-1)).abs().max().item() < 1e-4  # ...by a constant per row
    x = generate(own, TINY_PROMPT, max_steps=4, keep_logits=True, **TOP3)
    y = generate(reference, TINY_PROMPT, max_steps=4, keep_logits=True, **TOP3)
    assert x.layout.token_ids == y.layout.token_ids
    for p, q in zip(x.step_logits, y.step_logits):
        assert (p.log_softmax(-1) - q.log_softmax(-1)).abs().max().item() < 1e-4


def test_direct_logit_attribution_on_folded_norms(hooked_from_folder, tiny_dirs):
    from tempo_lens.tools import direct_logit_attribution

    own = hooked_from_folder(tiny_dirs["llama"])
    run = generate(own, TINY_PROMPT, max_steps=2, **TOP3)
    dla = direct_logit_attribution(own, run, steps=[1])
    sums = dla.groupby(["step", "rank", "reader_rank"]).agg(total=("attribution", "sum"), logit=("logit", "first"))
    assert (sums.total - sums.logit).abs().max() < 1e-3


def test_bad_flags_are_refused(hooked_from_folder, tiny_dirs):
    with pytest.raises(InvalidInputError, match="fold_ln"):
        hooked_from_folder(tiny_dirs["llama"], fold_ln="yes")
    with pytest.raises(InvalidInputError, match="dtype"):
        hooked_from_folder(tiny_dirs["llama"], dtype=torch.int8)


def test_embedded_model_log_probabilities(embedded_hooked, hooked_from_folder):
    from tempo_lens.models.loading import embedded_model_dir

    own = hooked_from_folder(embedded_model_dir())
    ids = embedded_hooked.to_tokens("The cat sat on the mat because")
    with torch.no_grad():
        a, b = own(ids), embedded_hooked(ids)
    assert (a.log_softmax(-1) - b.log_softmax(-1)).abs().max().item() < 1e-4
