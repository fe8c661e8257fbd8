"""The hooks as a library: every docstring example of ``tempo_lens.hooks`` and the README's
"Using the hooks in your own research" code blocks run as written on tiny random-weight bridges.

Examples are written against a ``model`` variable bound to any TransformerBridge; here it is bound to
the tiny random-weight bridges of ``tests/helpers.py`` (Llama, Llama-3 RoPE scaling, Qwen2 and, for the
examples that do not need RoPE, GPT-2), so nothing is downloaded and the whole file runs in seconds.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest
import torch

import tempo_lens.hooks as hooks_module

README = Path(__file__).resolve().parents[1] / "README.md"
README_SECTION = "## Using the hooks in your own research"

# Every public hook factory (and the helpers researchers combine with them) must document its target
# hook point and shapes and carry a runnable example.
FACTORIES = (
    "rope_position_hooks", "learned_position_hooks", "tempo_position_hooks", "attention_block_hooks",
    "layout_blocked_fn", "windowed_block_hooks", "isolation_mask_hooks", "pruned_keys_mask_hooks", "tempo_hooks",
    "fractional_positions", "attention_bias_hooks", "PatternRecorder",
)
NEEDS_ROPE = {"rope_position_hooks", "fractional_positions"}
NEEDS_LEARNED = {"learned_position_hooks"}
ROPE_ARCHITECTURES = ("llama", "llama3_scaling", "qwen2", "gemma3")


def docstring_example(obj) -> str | None:
    """The indented literal block after a line ending in ``Example::`` (or ``...)::``), dedented."""
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"Example.*::\s*$", line):
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                block.append(following)
            code = textwrap.dedent("\n".join(block)).strip("\n")
            return code or None
    return None


def readme_blocks(heading: str = README_SECTION) -> list[str]:
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README.md has no {heading!r} section"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("heading", ["## Using tempo_lens", "## Research tools on siblings"])
def test_readme_api_examples_run_as_pasted(heading, embedded_model, monkeypatch, tmp_path, capsys):
    """Every block of these sections, in order, in one fresh session (``load_model()`` is the loaded embedded model)."""
    import tempo_lens

    blocks = readme_blocks(heading)
    assert blocks and blocks[0].lstrip().startswith("import tempo_lens")
    monkeypatch.setattr(tempo_lens, "load_model", lambda *args, **kwargs: embedded_model)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"<README {heading} block {i}>", "exec"), namespace)
    assert "Traceback" not in capsys.readouterr().out


def example_namespace(model) -> dict:
    """What the module docstring promises the examples: torch, TokenLayout, everything in tempo_lens.hooks, model."""
    namespace = {name: getattr(hooks_module, name) for name in dir(hooks_module) if not name.startswith("_")}
    from tempo_lens.layout import TokenLayout

    namespace.update(torch=torch, TokenLayout=TokenLayout, model=model)
    return namespace


def check_outputs(namespace: dict) -> None:
    for name in ("logits", "positions", "patterns"):
        value = namespace.get(name)
        tensors = value.values() if isinstance(value, dict) else [value]
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                assert torch.isfinite(tensor).all(), f"{name} has non-finite values"


def test_every_factory_documents_target_shapes_and_example():
    problems = []
    for name in FACTORIES:
        obj = getattr(hooks_module, name)
        doc = inspect.getdoc(obj) or ""
        if not re.search(r"hook_(attn_scores|pattern|cos|sin|pos_embed)", doc) and name != "layout_blocked_fn":
            problems.append(f"{name}: names no hook point")
        if not re.search(r"\[(batch|q, K|n_tokens)", doc):
            problems.append(f"{name}: gives no tensor shape")
        example = docstring_example(obj)
        if example is None:
            problems.append(f"{name}: no Example:: block")
        elif "model" not in example:
            problems.append(f"{name}: the example does not use `model`")
    public = [n for n, f in inspect.getmembers(hooks_module, inspect.isfunction)
              if n.endswith("_hooks") and f.__module__ == hooks_module.__name__]
    problems += [f"{n}: a public hook factory missing from FACTORIES" for n in public if n not in FACTORIES]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("arch", ROPE_ARCHITECTURES)
@pytest.mark.parametrize("name", [n for n in FACTORIES if n not in NEEDS_LEARNED])
def test_docstring_example_runs_on_rope_bridge(name, arch, tiny_bridges):
    namespace = example_namespace(tiny_bridges[arch])
    exec(compile(docstring_example(getattr(hooks_module, name)), f"<{name} example>", "exec"), namespace)
    check_outputs(namespace)


@pytest.mark.parametrize("name", [n for n in FACTORIES if n not in NEEDS_ROPE])
def test_docstring_example_runs_on_gpt2_bridge(name, tiny_bridges):
    namespace = example_namespace(tiny_bridges["gpt2"])
    exec(compile(docstring_example(getattr(hooks_module, name)), f"<{name} example>", "exec"), namespace)
    check_outputs(namespace)


def test_learned_position_example_needs_a_learned_table(tiny_llama):
    """The one example that is GPT-2 only says so, and fails clearly elsewhere."""
    from tempo_lens.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no learned position table"):
        exec(docstring_example(hooks_module.learned_position_hooks), example_namespace(tiny_llama))


def test_docstring_examples_change_what_they_claim(tiny_llama):
    """Shared positions and isolation do reach the model: the examples' outputs differ from a plain forward."""
    namespace = example_namespace(tiny_llama)
    exec(docstring_example(hooks_module.rope_position_hooks), namespace)
    plain = tiny_llama(namespace["tokens"])
    assert torch.allclose(plain[0, :3], namespace["logits"][0, :3], atol=1e-5)  # positions 0, 1, 2 unchanged
    assert not torch.allclose(plain[0, 3:], namespace["logits"][0, 3:], atol=1e-4)
    namespace = example_namespace(tiny_llama)
    exec(docstring_example(hooks_module.isolation_mask_hooks), namespace)
    layout, logits = namespace["layout"], namespace["logits"]
    alone = tiny_llama(torch.tensor([layout.token_ids[:3] + layout.token_ids[4:]]))  # prefix + second sibling
    assert torch.allclose(logits[0, -1], alone[0, -1], atol=1e-4)


@pytest.mark.parametrize("arch", ROPE_ARCHITECTURES)
def test_readme_hook_examples_run(arch, tiny_bridges, capsys, monkeypatch):
    """The blocks as pasted, in one session; ``load_model()`` hands out a tiny bridge of each architecture."""
    import tempo_lens

    blocks = readme_blocks()
    assert len(blocks) >= 3, "the README section should show positions + isolation, the bias and recorder, replays"
    monkeypatch.setattr(tempo_lens, "load_model", lambda *args, **kwargs: tiny_bridges[arch])
    namespace = {"__name__": "readme_example"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"<README hooks block {i}>", "exec"), namespace)
    out = capsys.readouterr().out
    assert "bias 2.0" in out
    assert namespace["result"].layout.n_steps >= 1
    # the bias did shift attention toward the parallel set on the chosen layer
    values = [float(v) for v in re.findall(r"parallel set (\d+\.\d+)", out)]
    assert len(values) == 2 and values[1] > values[0]


def test_replay_extra_hooks_act_before_the_recorder(tiny_llama):
    """``replay(extra_hooks=...)``: the hooks change the forward, and the returned attention is the changed one."""
    from tempo_lens.layout import TokenLayout
    from tempo_lens.replaying import replay

    layout = TokenLayout.from_prompt([1, 10, 11])
    layout.append_step([12, 13], [0.6, 0.3])
    layout.append_step([14], [0.9])
    parallel = layout.parallel_tensor()
    plain = replay(tiny_llama, layout)
    assert torch.equal(replay(tiny_llama, layout, extra_hooks=None).logits, plain.logits)
    biased = replay(tiny_llama, layout, extra_hooks=hooks_module.attention_bias_hooks(tiny_llama, parallel, bias=3.0, layers=[0]))
    # layer 0's input is untouched, so its last query must put more weight on the parallel keys
    to_parallel = lambda rep: float(rep.attention[1][0, 0, :, -1, : len(parallel)][:, parallel].sum(-1).mean())
    assert to_parallel(biased) > to_parallel(plain) + 0.05
    assert not torch.allclose(biased.logits, plain.logits)
