"""Issue 32, class 6: every public function checks its inputs with the rules ``generate`` uses (no raw traceback);
class 9: bytes are never token ids, names hold no invisible characters, one rule for the output folders' links,
messages that name a cause and a path."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from tempo_lens import generate, generate_batch
from tempo_lens.errors import ConfigError, InvalidInputError
from tempo_lens.hooks import attention_bias_hooks, attention_block_hooks
from tempo_lens.layout import TokenLayout
from tempo_lens.replaying import replay
from tests.reliability.conftest import assert_clean_refusal, run_cli

TOKENS = [1, 10, 11, 12]


def _forward(model, hooks):
    return model.run_with_hooks(torch.tensor([TOKENS]), fwd_hooks=hooks)


# ---- attention_bias_hooks / attention_block_hooks: layers and heads by the one rule -------------------------

@pytest.mark.parametrize("layers", [[99], [3], [-4], [1.5], "x", [True], ["0"]])
@pytest.mark.parametrize("make", ["bias", "block"])
def test_hook_builders_refuse_layers_the_model_lacks_when_built(tiny_llama, layers, make):
    keys = torch.ones(len(TOKENS), dtype=torch.bool)
    with pytest.raises(InvalidInputError, match="layer"):
        if make == "bias":
            attention_bias_hooks(tiny_llama, keys, 1.0, layers=layers)
        else:
            attention_block_hooks(tiny_llama, lambda q, k: torch.zeros(q, k, dtype=torch.bool), layers=layers)


def test_a_negative_layer_counts_from_the_last_as_everywhere_else(tiny_llama):
    keys = torch.tensor([False, True, True, False])
    last = _forward(tiny_llama, attention_bias_hooks(tiny_llama, keys, 2.0, layers=[-1]))
    named = _forward(tiny_llama, attention_bias_hooks(tiny_llama, keys, 2.0, layers=[tiny_llama.cfg.n_layers - 1]))
    plain = _forward(tiny_llama, [])
    assert torch.equal(last, named) and not torch.allclose(last, plain)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"heads": [4]}, "heads"),
    ({"heads": [-1]}, "heads"),
    ({"heads": "01"}, "heads"),
    ({"bias": float("nan")}, "bias"),
    ({"bias": float("inf")}, "bias"),
    ({"bias": "1"}, "bias"),
    ({"key_mask": torch.ones(4)}, "key_mask"),
    ({"key_mask": [True] * 4}, "key_mask"),
])
def test_bias_hooks_refuse_bad_heads_biases_and_masks_when_built(tiny_llama, kwargs, fragment):
    args = {"key_mask": torch.ones(4, dtype=torch.bool), "bias": 1.0, **kwargs}
    with pytest.raises(InvalidInputError, match=fragment):
        attention_bias_hooks(tiny_llama, args.pop("key_mask"), args.pop("bias"), **args)


@pytest.mark.parametrize("key_mask", [torch.ones(2, dtype=torch.bool), lambda k: torch.ones(k + 1, dtype=torch.bool),
                                      lambda k: torch.ones(k)])
def test_a_key_mask_that_does_not_cover_the_keys_is_refused_not_broadcast(tiny_llama, key_mask):
    with pytest.raises(InvalidInputError, match="one boolean per key"):
        _forward(tiny_llama, attention_bias_hooks(tiny_llama, key_mask, 1.0))


# ---- replay and the tools: token ids by generate's rule --------------------------------------------------------

@pytest.mark.parametrize("ids", [[1, 96, 3], [1, -3, 3], [10**12]])
def test_replay_of_ids_outside_the_vocabulary_is_refused(tiny_llama, ids):
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        replay(tiny_llama, TokenLayout.from_prompt(ids))


def test_the_tools_refuse_such_a_layout_too(tiny_llama):
    from tempo_lens.tools import logit_lens

    layout = TokenLayout.from_prompt([1, 10, 11])
    layout.append_step([12, 200], [0.6, 0.3])
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        logit_lens(tiny_llama, layout)


# ---- class 9: bytes are not token ids --------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [b"t1 t5", bytearray(b"t1 t5"), memoryview(b"t1 t5"), b"\xff\xfe"])
def test_bytes_are_refused_as_prompts(tiny_llama, prompt, no_forward):
    with pytest.raises(InvalidInputError, match="decode it"):
        generate(tiny_llama, prompt, max_steps=1)
    with pytest.raises(InvalidInputError, match="decode it"):
        generate_batch(tiny_llama, [prompt, "t1 t2"], max_steps=1)


# ---- class 9: experiment names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("char", ["\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\u2066", "\x00"])
def test_names_with_invisible_characters_are_refused(char):
    from tempo_lens.experiment import config_from_dict

    with pytest.raises(ConfigError, match="control, format or line/paragraph"):
        config_from_dict({"name": f"exp{char}1", "prompt": "t1"})


@pytest.mark.parametrize("name", ["café", "実験-1", "exp 1", "Ünïcödé_ok"])
def test_visible_unicode_names_are_fine(name):
    from tempo_lens.experiment import config_from_dict

    assert config_from_dict({"name": name, "prompt": "t1"}).name == name


# ---- class 9: one rule for OUT/runs and OUT/report links ---------------------------------------------------------

def _pair(folder, model):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pair.toml").write_text(f'name = "pair"\nprompt = "t1 t17 t42 t5"\nmodes = ["isolated", "visible"]\n'
                                      f'model = "{model}"\nthreshold = 1e-6\nmax_parallel = 2\nmax_steps = 2\n')
    return folder


@pytest.mark.parametrize("linked", ["runs", "report"])
def test_a_link_to_a_folder_at_runs_or_report_is_followed(tiny_dirs, tmp_path, linked):
    folder = _pair(tmp_path / "analyses", tiny_dirs["llama"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / linked).symlink_to(elsewhere)
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0, err
    assert (folder / linked).is_symlink() and any(elsewhere.iterdir())


@pytest.mark.parametrize("linked", ["runs", "report"])
@pytest.mark.parametrize("to", ["nowhere", "a_file"])
def test_a_link_that_leads_nowhere_or_to_a_file_is_refused_the_same_way(tiny_dirs, tmp_path, linked, to, no_model_load):
    folder = _pair(tmp_path / "analyses", tiny_dirs["llama"])
    target = tmp_path / "target"
    if to == "a_file":
        target.write_text("x")
    (folder / linked).symlink_to(target)
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, str(folder / linked))


# ---- class 9: messages name a cause and a path ----------------------------------------------------------------

@pytest.mark.parametrize("exc, expected", [
    (EOFError(), "EOFError"),
    (ValueError(""), "ValueError"),
    (OSError(errno.EFBIG, os.strerror(errno.EFBIG)), "ulimit"),
    (OSError(errno.EACCES, os.strerror(errno.EACCES), "/x/attention.npz"), "/x/attention.npz"),
])
def test_a_cause_is_never_empty(exc, expected):
    from tempo_lens.errors import describe

    assert expected in describe(exc) and describe(exc).strip()


def test_an_archive_unreadable_without_words_names_its_cause(saved_run_folder, monkeypatch):
    import zipfile

    from tempo_lens.experiment import load_experiment

    def silent(*args, **kwargs):
        raise EOFError

    monkeypatch.setattr(zipfile.ZipFile, "open", silent)
    with pytest.raises(Exception, match=r"unreadable \(EOFError\)|EOFError") as refused:
        load_experiment(saved_run_folder)
    assert "()" not in str(refused.value)


@pytest.fixture
def saved_run_folder(tiny_llama, tmp_path):
    from tempo_lens.experiment import config_from_dict, run_experiment, save_experiment

    config = config_from_dict({"prompt": "t1 t17", "threshold": 1e-6, "max_parallel": 2, "max_steps": 1})
    return save_experiment(run_experiment(config, tiny_llama), tmp_path / "saved")


def test_a_file_too_large_names_the_path_and_the_limit(tiny_dirs, tmp_path, monkeypatch):
    import tempo_lens.experiment.storage as storage

    config = tmp_path / "c.toml"
    config.write_text(f'prompt = "t1 t5"\nmodel = "{tiny_dirs["llama"]}"\nthreshold = 1.0\nmax_steps = 1\n')

    def too_large(path, groups):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))  # as a write past `ulimit -f` raises it: no file name

    monkeypatch.setattr(storage, "write_arrays", too_large)
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "out")])
    assert_clean_refusal(rc, err, "file too large", str(tmp_path / "out"), "ulimit")


# ---- the research tools: steps, conditions and siblings by the same rules ---------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tiny_llama):
    return generate(tiny_llama, [1, 17, 42, 5], max_steps=3, threshold=1e-6, max_parallel=2, capture=True)


def _tool_calls():
    from tempo_lens.tools import activation_patching, direct_logit_attribution, logit_lens, residual_difference

    return {
        "logit_lens_steps_text": lambda m, r: logit_lens(m, r, steps="x"),
        "logit_lens_steps_float": lambda m, r: logit_lens(m, r, steps=[1.5]),
        "attribution_steps_text": lambda m, r: direct_logit_attribution(m, r, steps="x"),
        "residuals_steps_float": lambda m, r: residual_difference(m, r, steps=[0.5]),
        "residuals_condition_text": lambda m, r: residual_difference(m, r, a="isolated"),
        "patching_condition_text": lambda m, r: activation_patching(m, r, "all", source="isolated"),
        "patching_where_none": lambda m, r: activation_patching(m, r, None),
        "patching_score_steps_text": lambda m, r: activation_patching(m, r, "all", score_steps="x"),
    }


@pytest.mark.parametrize("case", list(_tool_calls()))
def test_the_tools_refuse_malformed_steps_conditions_and_siblings(tiny_llama, tiny_run, case):
    with pytest.raises(InvalidInputError):
        _tool_calls()[case](tiny_llama, tiny_run)


@pytest.mark.parametrize("layers", [[-1], ["0"], [1.5], "01", [True]])
def test_a_pattern_recorder_refuses_layers_it_cannot_name(layers):
    from tempo_lens.hooks import PatternRecorder

    with pytest.raises(InvalidInputError, match="layer"):
        PatternRecorder(layers)


def test_a_pattern_recorder_given_the_model_reads_layers_by_the_one_rule(tiny_llama):
    from tempo_lens.hooks import PatternRecorder

    last = tiny_llama.cfg.n_layers - 1
    assert PatternRecorder([-1, 0], tiny_llama).layers == [0, last]
    with pytest.raises(InvalidInputError, match="layer"):
        PatternRecorder([99], tiny_llama)
    recorder = PatternRecorder([-1], tiny_llama)
    _forward(tiny_llama, recorder.hooks())
    assert list(recorder.take()) == [last]
