"""Loading for the nnsight backend: what load_model gives, and a clear error without nnsight."""

from __future__ import annotations

import sys

import pytest
import torch

from tempo_lens.errors import ModelUnavailableError


def test_load_model_gives_an_eager_fp32_language_model(tiny_nnsight):
    from nnsight import LanguageModel

    model = tiny_nnsight["gemma3"]
    assert isinstance(model, LanguageModel)
    assert model._module.config._attn_implementation == "eager"
    assert next(model._module.parameters()).dtype == torch.float32
    assert model.tokenizer("t5 t6")["input_ids"][0] == model.tokenizer.bos_token_id  # BOS, as TransformerLens's tokenizer


def test_without_nnsight_the_error_names_the_extra(tiny_dirs, monkeypatch):
    from tempo_lens import load_model

    monkeypatch.setitem(sys.modules, "nnsight", None)  # as if it were not installed
    with pytest.raises(ModelUnavailableError, match=r"tempo_lens\[nnsight\]"):
        load_model(str(tiny_dirs["llama"]), backend="nnsight")
