"""Test helpers: tiny model builders and the Hugging Face eager oracle (position_ids + 4D float mask)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

TINY_ARCHITECTURES = ("llama", "llama3_scaling", "qwen2", "gpt2")
TINY_VOCAB = 96


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(TINY_VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="t1", eos_token="t2", unk_token="t0")


def tiny_config(name: str):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if name == "gpt2":  # learned absolute positions: TEMPO goes through hook_pos_embed
        return GPT2Config(vocab_size=TINY_VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2)

    common = dict(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    if name == "llama":
        return LlamaConfig(**common, rope_theta=10000.0)
    if name == "llama3_scaling":
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        return LlamaConfig(**common, rope_parameters=rope)
    if name == "qwen2":
        return Qwen2Config(**common, rope_theta=10000.0)
    raise KeyError(name)


def build_tiny_model(name: str, directory: Path, seed: int = 0) -> Path:
    """A random-weight model saved with a word-level tokenizer (ids ``t0..t95``); nothing is downloaded."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(name))
    # Larger weights than the default init make attention patterns and logits less uniform.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.15)
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


def hf_eager(directory) -> "torch.nn.Module":
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()


def reference_mask(layout, mode: str) -> Tensor:
    """The TEMPO mask written out loop by loop from the layout's raw lists (independent of layout.blocked).

    Query i may see key j when j <= i physically, and, for j != i: in isolated mode j is not a sibling
    of i (same step >= 0), and j was not pruned at a step earlier than i's step.
    """
    n = len(layout.token_ids)
    mask = torch.full((n, n), float("-inf"))
    for i in range(n):
        for j in range(i + 1):
            if j != i:
                if mode == "isolated" and layout.steps[i] >= 0 and layout.steps[j] == layout.steps[i]:
                    continue
                if layout.pruned_at[j] != -1 and layout.pruned_at[j] < layout.steps[i]:
                    continue
            mask[i, j] = 0.0
    return mask


def hf_oracle_logits(hf_model, layout, mode: str = "isolated", positions: Tensor | None = None) -> Tensor:
    """HF eager over the whole physical sequence with explicit position_ids and a 0/-inf 4D mask."""
    ids = torch.tensor([layout.token_ids])
    pos = (torch.tensor(layout.logical_positions) if positions is None else positions).long()[None]
    mask = reference_mask(layout, mode)[None, None]
    with torch.no_grad():
        return hf_model(input_ids=ids, position_ids=pos, attention_mask=mask).logits[0]
