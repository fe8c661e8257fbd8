"""Bracketed sibling sets show whitespace siblings visibly; plain text stays raw."""

from __future__ import annotations

from tempo_lens.generation import GenerationConfig, GenerationResult
from tempo_lens.layout import TokenLayout
from tempo_lens.text import bracketed, visible_token


def test_visible_tokens():
    assert [visible_token(t) for t in (" a", "\n", " She", " ", "\t\n", "  ", "", "a\nb")] == [
        " a", "⏎", " She", "␣", "⇥⏎", "␣␣", "∅", "a⏎b"]


def test_bracketed_set_stays_on_one_line():
    assert bracketed([" a", "\n", " She"]) == "[ a/⏎/ She]"
    assert bracketed([" a", "\n"], pruned=[False, True]) == "[ a/~~⏎~~]"
    assert bracketed(["\n"]) == "\n"  # a single token is running text


def test_generation_text_and_clean_text():
    layout = TokenLayout.from_prompt([1, 2])
    layout.append_step([3, 4, 5], [0.5, 0.3, 0.2])
    layout.append_step([6], [0.9])
    result = GenerationResult(
        model="m", prompt="Hi", prompt_text="Hi", config=GenerationConfig(max_steps=2, max_parallel=3), layout=layout,
        token_strings=["<s>", "Hi", " a", "\n", " She", "\n"], thresholds=[0.1, 0.1], stop_reason="max_steps",
        n_layers=1, n_heads=1, clean_text="Hi a\n",
    )
    assert result.text == "Hi[ a/⏎/ She]\n"
    assert "\n" not in result.to_json_dict()["text"][:-1] and result.clean_text == "Hi a\n"
