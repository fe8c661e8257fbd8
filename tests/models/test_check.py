"""Load-time checks: a damaged user model folder, or a model the hooks cannot serve, is one clear error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tempo_lens import load_model
from tempo_lens.errors import InvalidInputError, ModelUnavailableError
from tempo_lens.models.check import folder_problem, hooks_problem


def _set_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _nul_bytes_in_tokenizer(folder: Path) -> None:
    path = folder / "tokenizer.json"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


FOLDER_DAMAGE = {
    "weights truncated": (lambda f: os.truncate(f / "model.safetensors", (f / "model.safetensors").stat().st_size // 2),
                          "model.safetensors is truncated"),
    "weights padded": (lambda f: open(f / "model.safetensors", "ab").write(b"\0" * 100), "longer than its header"),
    "weights header garbage": (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64), "model.safetensors"),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), "no weights"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{hidden_size: 64"), "config.json is not valid JSON"),
    "config not UTF-8": (lambda f: (f / "config.json").write_bytes(b"\xff\xfe{}"), "config.json is not UTF-8"),
    "config missing": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "config hidden_size changed": (lambda f: _set_config(f, hidden_size=128), "hidden_size 128"),
    "config vocab_size changed": (lambda f: _set_config(f, vocab_size=50), "vocab_size 50"),
    "config without model_type": (lambda f: (f / "config.json").write_text("{}"), "model_type"),
    "tokenizer with NUL bytes": (_nul_bytes_in_tokenizer, "tokenizer.json is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_DAMAGE))
def test_damaged_model_folder_is_one_clear_error(case, tiny_dirs, tmp_path):
    folder = shutil.copytree(tiny_dirs["llama"], tmp_path / "model")
    assert folder_problem(folder) is None
    damage, fragment = FOLDER_DAMAGE[case]
    damage(folder)
    with pytest.raises(ModelUnavailableError, match="unusable") as info:
        load_model(str(folder), device="cpu")
    assert fragment in str(info.value)


def test_architecture_the_hooks_cannot_serve_is_refused_at_load(tmp_path):
    from transformers import AutoModelForCausalLM, BloomConfig

    from tests.helpers import _tokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(BloomConfig(vocab_size=96, hidden_size=64, n_layer=2, n_head=4)).save_pretrained(tmp_path)
    _tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelUnavailableError, match="hooks cannot serve it: it exposes neither rotary position hooks .* nor hook_pos_embed"):
        load_model(str(tmp_path), device="cpu")


def test_hooks_problem_names_the_missing_piece(tiny_llama, monkeypatch):
    assert hooks_problem(tiny_llama) is None
    hook_dict = dict(tiny_llama.hook_dict)
    del hook_dict["blocks.1.attn.hook_attn_scores"]
    monkeypatch.setattr(type(tiny_llama), "hook_dict", property(lambda self: hook_dict))
    assert hooks_problem(tiny_llama) == "the TEMPO hooks cannot serve it: it has no blocks.1.attn.hook_attn_scores hook point"


def test_logits_that_overflow_the_dtype_are_refused_at_load(tiny_dirs, tmp_path):
    """A model whose activations overflow float16 (as Gemma 3's do) is refused when loaded, naming the dtype."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_dirs["llama"], tmp_path / "loud")
    weights = load_file(str(folder / "model.safetensors"))
    weights["lm_head.weight"] *= 1e6  # logits of ~1e5: fine in float32, past float16's range (65504)
    save_file(weights, str(folder / "model.safetensors"))
    assert load_model(str(folder), device="cpu") is not None
    with pytest.raises(ModelUnavailableError, match="not finite in float16 .* bfloat16 or float32"):
        load_model(str(folder), device="cpu", dtype="float16")


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(dtype="float99"), "float32, bfloat16, float16"),
    (dict(dtype=torch.int8), "float32, bfloat16, float16"),
    (dict(device="tpu9"), "'tpu9' is not a device name"),
    (dict(device="cuda:7" if torch.cuda.is_available() else "cuda"), "cuda"),
    (dict(device="cpu", device_map="auto"), "either device or device_map"),
])
def test_bad_dtype_or_device_is_invalid_input(kwargs, fragment, tiny_dirs):
    with pytest.raises(InvalidInputError) as info:
        load_model(str(tiny_dirs["llama"]), **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("dtype, bound", [("float32", 1e-3), ("bfloat16", 1.0), ("float16", 0.25)])
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_dtype_matches_hf_eager_in_the_same_dtype(tiny_dirs, dtype, bound, mode):
    """The oracle bounds per dtype (docs/models.md): HF eager in the same dtype, fed step by step through
    its cache like the generation (1e-5), and as one full forward (the dtype's bound)."""
    from transformers import AutoModelForCausalLM

    from tempo_lens.generation import generate
    from tests.helpers import hf_oracle_logits, hf_stepwise_logits

    model = load_model(str(tiny_dirs["llama"]), device="cpu", dtype=dtype)
    result = generate(model, [1, 17, 42, 5, 63, 8], threshold=1e-6, max_parallel=3, max_steps=4, mode=mode, keep_logits=True)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], attn_implementation="eager", dtype=getattr(torch, dtype)).eval()
    oracle = hf_oracle_logits(hf, result.layout, mode).float()
    full = [(oracle[result.layout.step_range(s).start : result.layout.step_range(s).stop] - rows.float()).abs().max().item()
            for s, rows in enumerate(result.step_logits)]
    stepwise = [(a.float() - b.float()).abs().max().item() for a, b in zip(hf_stepwise_logits(hf, result.layout, mode), result.step_logits)]
    assert max(stepwise) < 1e-5 and max(full) < bound, (stepwise, full)
