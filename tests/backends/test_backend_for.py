"""Which backend serves a model, and what each refuses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tempo_lens.backends import backend_for, check_backend_name
from tempo_lens.errors import InvalidInputError


def test_bridge_is_served_by_the_bridge_backend(tiny_llama):
    backend = backend_for(tiny_llama)
    assert backend.name == "bridge" and backend.position_kind() == "rotary"
    assert backend.device == next(tiny_llama.original_model.parameters()).device


def test_hooked_is_served_by_the_hooked_backend(tiny_hooked):
    from transformer_lens import HookedTransformer

    model = tiny_hooked["gpt2"]
    assert isinstance(model, HookedTransformer)
    backend = backend_for(model)
    assert backend.name == "hooked" and backend.position_kind() == "learned"


def test_anything_else_is_refused_by_name():
    with pytest.raises(InvalidInputError, match="TransformerBridge or HookedTransformer.*SimpleNamespace"):
        backend_for(SimpleNamespace(cfg=None))
    with pytest.raises(InvalidInputError, match="bridge, hooked"):
        check_backend_name("keras")
