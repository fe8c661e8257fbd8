"""A generated tiny-Llama run with several parallel steps, shared by the tool tests."""

from __future__ import annotations

import warnings

import pytest

from tempo_lens.generation import generate
from tests.helpers import hf_eager

PROMPT = [1, 17, 42, 5, 63, 8]


def tiny_run(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return generate(model, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, **kwargs)


@pytest.fixture(scope="module")
def llama_run(tiny_llama):
    return tiny_run(tiny_llama)


@pytest.fixture(scope="module")
def llama_hf(tiny_dirs):
    return hf_eager(tiny_dirs["llama"])
