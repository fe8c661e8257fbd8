"""TEMPO generation against independent oracles (HF eager with position_ids + 4D float mask)."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.errors import InvalidInputError
from tempo_lens.generation import generate
from tempo_lens.layout import TokenLayout
from tempo_lens.schedules import ThresholdSchedule
from tests.helpers import TINY_ARCHITECTURES, TINY_PROMPT, TOP3, hf_eager, hf_oracle_logits, max_step_delta, tiny_oracle_delta

_max_step_delta = max_step_delta


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_step_matches_hf_oracle_tiny(tiny_bridges, tiny_dirs, arch, mode):
    assert tiny_oracle_delta(tiny_bridges[arch], tiny_dirs[arch], mode) < 1e-4


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_step_matches_hf_oracle_embedded(embedded_model, embedded_hf, mode):
    result = generate(embedded_model, "The cat sat on the", threshold=0.05, max_steps=8, mode=mode, keep_logits=True)
    assert max(result.layout.step_sizes()) >= 2, "the check needs at least one parallel step"
    oracle = hf_oracle_logits(embedded_hf, result.layout, mode)
    assert _max_step_delta(result, oracle) < 1e-3


def test_isolation_equals_plain_forward_of_each_sibling(tiny_llama, tiny_dirs):
    """No mask in the oracle: at the first parallel step each sibling sees only prefix + itself."""
    result = generate(tiny_llama, TINY_PROMPT, max_steps=1, mode="isolated", keep_logits=True, **TOP3)
    hf = hf_eager(tiny_dirs["llama"])
    for row, token in enumerate(result.steps[0].token_ids):
        with torch.no_grad():
            plain = hf(torch.tensor([TINY_PROMPT + [token]])).logits[0, -1]
        assert (plain - result.step_logits[0][row]).abs().max().item() < 1e-4


def test_isolated_and_visible_differ_only_after_first_sibling(tiny_llama):
    iso = generate(tiny_llama, TINY_PROMPT, max_steps=1, mode="isolated", keep_logits=True, **TOP3)
    vis = generate(tiny_llama, TINY_PROMPT, max_steps=1, mode="visible", keep_logits=True, **TOP3)
    a, b = iso.step_logits[0], vis.step_logits[0]
    assert torch.allclose(a[0], b[0], atol=1e-5)
    assert (a[1:] - b[1:]).abs().max().item() > 1e-3


def test_threshold_one_is_greedy(tiny_llama, tiny_dirs):
    result = generate(tiny_llama, TINY_PROMPT, threshold=1.0, max_steps=6)
    assert result.layout.step_sizes() == [1] * 6
    hf = hf_eager(tiny_dirs["llama"])
    ids = list(TINY_PROMPT)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    assert result.layout.token_ids == ids


def test_layout_positions_follow_the_spec(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=3, **TOP3)
    P = len(TINY_PROMPT)
    assert result.layout.logical_positions == list(range(P)) + [P] * 3 + [P + 1] * 3 + [P + 2] * 3
    steps = result.steps
    assert [s.physical_range for s in steps] == [(P, P + 3), (P + 3, P + 6), (P + 6, P + 9)]
    for s in steps:
        assert s.probs == sorted(s.probs, reverse=True)


def test_deterministic(tiny_llama):
    a = generate(tiny_llama, TINY_PROMPT, max_steps=4, **TOP3)
    b = generate(tiny_llama, TINY_PROMPT, max_steps=4, **TOP3)
    assert a.layout.to_dict() == b.layout.to_dict() and a.text == b.text


def test_bracketed_and_clean_text(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=2, **TOP3)
    first = result.steps[0]
    assert "[" + "/".join(first.tokens) + "]" in result.text
    # the word-level test tokenizer decodes a sequence with spaces between tokens
    assert result.clean_text.split()[-1] == result.steps[1].tokens[0]
    assert result.clean_text.endswith(first.tokens[0] + " " + result.steps[1].tokens[0])


def test_next_token_sources_use_the_named_rows(tiny_llama):
    from tempo_lens.generation import next_distribution

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    rows = torch.softmax(logits, -1)
    assert torch.allclose(next_distribution(logits, [0.6, 0.2], "top"), rows[0])
    assert torch.allclose(next_distribution(logits, [0.6, 0.2], "last"), rows[1])
    assert torch.allclose(next_distribution(logits, [0.6, 0.2], "mixture"), 0.75 * rows[0] + 0.25 * rows[1])
    for source in ("top", "last", "mixture"):
        assert generate(tiny_llama, TINY_PROMPT, max_steps=2, next_token_source=source, **TOP3).layout.n_steps == 2


def test_eos_stops_after_min_steps(tiny_llama):
    free = generate(tiny_llama, TINY_PROMPT, threshold=1.0, max_steps=4)
    eos = free.steps[1].token_ids[0]
    config = tiny_llama.original_model.generation_config
    old = config.eos_token_id
    config.eos_token_id = eos
    try:
        stopped = generate(tiny_llama, TINY_PROMPT, threshold=1.0, max_steps=4)
        assert stopped.layout.n_steps == 2 and stopped.stop_reason == "eos"
        held = generate(tiny_llama, TINY_PROMPT, threshold=1.0, max_steps=4, min_steps=3)
        assert all(eos not in s.token_ids for s in held.steps[:3])
    finally:
        config.eos_token_id = old


def test_threshold_schedules():
    bez = ThresholdSchedule(start=0.1, kind="bezier", final=0.5)
    # t = 0.5: 3*0.25*0.5*0.2 + 3*0.5*0.25*0.8 + 0.125 = 0.075 + 0.3 + 0.125 = 0.5
    assert bez.at(0, 11) == pytest.approx(0.1)
    assert bez.at(5, 11) == pytest.approx(0.1 + 0.4 * 0.5)
    assert bez.at(10, 11) == pytest.approx(0.5)
    relu = ThresholdSchedule.parse(0.1, "relu:0.3:0.5")
    assert relu.at(2, 11) == pytest.approx(0.1)
    assert relu.at(8, 11) == pytest.approx(0.1 + 0.2 * 0.6)
    assert ThresholdSchedule.parse(0.2, "bezier:0.4:0.1:0.9").p2 == 0.9


def test_json_carries_every_setting(tiny_llama):
    """to_json_dict lists the config's settings from GenerationConfig itself (min_steps, chat, capture included)."""
    from tempo_lens.generation import GenerationConfig

    result = generate(tiny_llama, TINY_PROMPT, max_steps=2, min_steps=1, capture=[0])
    data = result.to_json_dict()
    assert set(GenerationConfig.keys()) <= set(data)
    assert data["min_steps"] == 1 and data["chat"] is False and data["capture"] == {"layers": [0], "steps": None}


def test_schedule_is_recorded(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, threshold=0.05, max_steps=3, threshold_schedule="relu:0.5:0.5")
    data = result.to_json_dict()
    assert data["threshold_schedule"]["kind"] == "relu"
    # t = 0, 0.5, 1 with knee 0.5: flat at the start value up to the knee, then linear to 0.5
    assert [s["threshold"] for s in data["steps"]] == pytest.approx([0.05, 0.05, 0.5][: len(data["steps"])])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(threshold=0), "threshold"),
        (dict(threshold=-1), "threshold"),
        (dict(threshold=1.5), "threshold"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(threshold="abc"), "threshold"),
        (dict(max_parallel=0), "max_parallel"),
        (dict(max_steps=0), "max_steps"),
        (dict(mode="both"), "mode"),
        (dict(next_token_source="first"), "next_token_source"),
        (dict(max_steps=10_000), "context"),
    ],
)
def test_bad_input_is_refused_before_model_work(tiny_llama, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        generate(tiny_llama, TINY_PROMPT, **kwargs)


@pytest.mark.parametrize("prompt", ["", "   ", []])
def test_empty_prompt_is_refused(tiny_llama, prompt):
    with pytest.raises(InvalidInputError, match="empty"):
        generate(tiny_llama, prompt)


def test_max_parallel_cap_warns(tiny_llama):
    with pytest.warns(UserWarning, match="keeping the top 3"):
        generate(tiny_llama, TINY_PROMPT, max_steps=1, **TOP3)


def test_chat_template(embedded_model, tiny_llama):
    plain = generate(embedded_model, "Name a colour.", threshold=0.5, max_steps=1)
    chat = generate(embedded_model, "Name a colour.", threshold=0.5, max_steps=1, chat=True)
    template = embedded_model.tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}],
                                                            add_generation_prompt=True, tokenize=False)
    assert chat.prompt_text == embedded_model.tokenizer.decode(chat.prompt_token_ids)
    assert "Name a colour." in template and len(chat.prompt_token_ids) > len(plain.prompt_token_ids)
    with pytest.raises(InvalidInputError, match="chat template"):
        generate(tiny_llama, "t1 t2", chat=True)


def test_progress_bar_only_when_asked_or_long(tiny_llama, capsys, monkeypatch):
    """A bar per step on stderr when asked; by default only for long runs at a terminal (never in a pipe or test)."""
    from tempo_lens.generation import generate_batch, progress

    generate(tiny_llama, TINY_PROMPT, max_steps=3)
    assert "TEMPO steps" not in capsys.readouterr().err
    generate(tiny_llama, TINY_PROMPT, max_steps=3, progress=True)
    assert "TEMPO steps" in capsys.readouterr().err
    generate_batch(tiny_llama, [TINY_PROMPT, TINY_PROMPT], max_steps=2, progress=True)
    assert "TEMPO steps" in capsys.readouterr().err
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    with progress.step_bar(progress.LONG_STEPS, None) as long, progress.step_bar(progress.LONG_STEPS - 1, None) as short:
        assert long.disable is False and short.disable is True
