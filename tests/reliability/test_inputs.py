"""Every command-line flag and config key, by class: numbers, strings, paths and files, and strict JSON out.

Each refusal is one ``error:`` line naming the input and the fix, before the model loads (the values
do not depend on the model), with every file on disk unchanged. The tables are the classes; the
cases marked "issue" are the red-team examples.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from tests.reliability.conftest import assert_clean_refusal, run_cli, snapshot

# ---- numbers and text on the generate command line ----------------------------------------------

GENERATE_FLAGS = {
    "schedule_bezier_nan_point": (["--threshold-schedule", "bezier:0.5:nan:0.2"], ["--threshold-schedule", "control points"]),
    "schedule_bezier_inf_point": (["--threshold-schedule", "bezier:0.5:inf:0.2"], ["control points", "[0, 1]"]),
    "schedule_bezier_huge_points": (["--threshold-schedule", "bezier:0.5:1e308:1e308"], ["control points"]),
    "schedule_bezier_negative_point": (["--threshold-schedule", "bezier:0.5:-0.1:0.5"], ["control points"]),
    "schedule_bezier_final_nan": (["--threshold-schedule", "bezier:nan"], ["final threshold"]),
    "schedule_relu_final_inf": (["--threshold-schedule", "relu:inf:0.5"], ["final threshold"]),
    "schedule_relu_knee_nan": (["--threshold-schedule", "relu:0.5:nan"], ["knee"]),
    "schedule_blank": (["--threshold-schedule", "   "], ["threshold schedule"]),
    "min_steps_above_max_steps": (["--min-steps", "5", "--max-steps", "2"], ["min_steps (5)", "max_steps (2)", "lower min_steps"]),
    "max_parallel_absurd": (["--max-parallel", "1000000"], ["max_parallel", "at most"]),
    "max_parallel_overflow": (["--max-parallel", "1e400"], ["--max-parallel", "integer"]),
    "max_parallel_fraction": (["--max-parallel", "2.5"], ["--max-parallel", "integer"]),
    "max_parallel_negative": (["--max-parallel", "-3"], ["--max-parallel", ">= 1"]),
    "max_steps_nan": (["--max-steps", "nan"], ["--max-steps", "integer"]),
    "max_steps_empty": (["--max-steps", ""], ["--max-steps", "integer"]),
    "min_steps_inf": (["--min-steps", "inf"], ["--min-steps", "integer"]),
    "threshold_text_inf": (["--threshold", "Infinity"], ["threshold", "(0, 1]"]),
    "prune_similarity_nan": (["--prune-similarity", "nan"], ["--prune-similarity"]),
    "prune_similarity_inf": (["--prune-similarity", "inf"], ["--prune-similarity"]),
    "prune_threshold_inf": (["--prune-threshold", "inf"], ["--prune-threshold"]),
    "prune_threshold_text": (["--prune-threshold", "high"], ["--prune-threshold"]),
    "model_empty": (["--model", ""], ["--model is empty"]),
    "model_blank": (["--model", "  "], ["--model is empty"]),
}


@pytest.mark.parametrize("case", sorted(GENERATE_FLAGS))
def test_generate_flag_refused_before_the_model_loads(case, tmp_path, no_model_load, monkeypatch):
    args, fragments = GENERATE_FLAGS[case]
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(["generate", "t1 t5", *args])
    assert_clean_refusal(rc, err, *fragments)
    assert out == "" and list(tmp_path.iterdir()) == []


MODEL_DEPENDENT = {
    "past_the_context": (["--max-steps", "1000000"], ["context of 128", "lower max_steps"]),
    "past_the_context_by_one": (["--max-steps", "126"], ["129 logical positions", "context of 128"]),
}


@pytest.mark.parametrize("case", sorted(MODEL_DEPENDENT))
def test_generate_settings_that_depend_on_the_model_are_refused_before_any_forward(case, tiny_dirs, no_forward):
    args, fragments = MODEL_DEPENDENT[case]
    rc, out, err = run_cli(["generate", "t1 t5", "--model", str(tiny_dirs["llama"]), *args])
    assert_clean_refusal(rc, err, *fragments)
    assert out == ""


@pytest.mark.slow
def test_a_generation_too_large_for_memory_is_refused_before_any_forward(no_forward):
    """issue: ``--max-parallel 100000 --threshold 1e-9`` tried to allocate 48 GB; the estimate refuses it first."""
    rc, out, err = run_cli(["generate", "The cat sat on the", "--max-parallel", "100000", "--threshold", "1e-9"])
    assert_clean_refusal(rc, err, "would need about", "GiB", "lower max_parallel")
    assert out == ""


def test_the_memory_estimate_counts_at_most_the_vocabulary_per_step(tiny_llama):
    """A width beyond the vocabulary changes nothing: the tiny model (96 tokens) is not refused for it."""
    from tempo_lens.generation.memory import generation_bytes

    assert generation_bytes(tiny_llama, 3, 10, 10**5) == generation_bytes(tiny_llama, 3, 10, 96) > generation_bytes(tiny_llama, 3, 10, 95)


# ---- paths and values on the run / merge / analyze command lines --------------------------------

def _ok_config(folder: Path) -> Path:
    path = folder / "ok.toml"
    path.write_text('prompt = "t1 t5"\nmax_steps = 1\n')
    return path


COMMAND_FLAGS = {
    "run_out_empty": (["run", "{config}", "--out", ""], ["--out is empty"]),
    "run_out_nul": (["run", "{config}", "--out", "a\0b"], ["--out", "NUL"]),
    "run_model_empty": (["run", "{config}", "--model", ""], ["--model is empty"]),
    "run_model_blank": (["run", "{config}", "--model", "   "], ["--model is empty"]),
    "run_config_empty": (["run", ""], ["config path is empty"]),
    "run_config_nul": (["run", "a\0b.toml"], ["NUL"]),
    "run_shard_huge": (["run", "{config}", "--shard", "0/99999999999999999999"], ["--shard", "at most 10000"]),
    "run_shard_three_parts": (["run", "{config}", "--shard", "1/2/3"], ["--shard", "i/n"]),
    "run_shard_words": (["run", "{config}", "--shard", "a/b"], ["--shard", "i/n"]),
    "run_shard_fraction": (["run", "{config}", "--shard", "0.5/2"], ["--shard", "i/n"]),
    "run_batch_size_inf": (["run", "{config}", "--batch-size", "inf"], ["--batch-size"]),
    "run_batch_size_negative": (["run", "{config}", "--batch-size", "-1"], ["--batch-size", ">= 1"]),
    "merge_folder_empty": (["merge", ""], ["shards folder is empty"]),
    "merge_out_empty": (["merge", "{root}", "--out", ""], ["--out is empty"]),
    "merge_out_inside": (["merge", "{root}", "--out", "{root}/merged"], ["inside", "outside the shards folder"]),
    "analyze_missing": (["analyze", "{root}/nothing"], ["analyses folder", "does not exist"]),
    "analyze_file": (["analyze", "{config}"], ["analyses folder", "is a file"]),
    "analyze_model_empty": (["analyze", "{root}", "--model", ""], ["--model is empty"]),
}


@pytest.mark.parametrize("case", sorted(COMMAND_FLAGS))
def test_command_flag_refused_before_the_model_loads(case, tmp_path, no_model_load, monkeypatch):
    argv, fragments = COMMAND_FLAGS[case]
    config = _ok_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    rc, out, err = run_cli([a.format(config=config, root=tmp_path) for a in argv])
    assert_clean_refusal(rc, err, *fragments)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ok.toml"]


# ---- files: the config itself and its prompts_file ----------------------------------------------

def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _symlink(target: str):
    def make(path: Path) -> Path:
        path.symlink_to(target)
        return path

    return make


def _write(data: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return make


def _sparse(size: int):
    def make(path: Path) -> Path:
        with open(path, "wb") as handle:
            handle.truncate(size)
        return path

    return make


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


SPECIAL_FILES = {
    "dev_zero": (lambda p: Path("/dev/zero"), ["not a regular file"]),
    "dev_null": (lambda p: Path("/dev/null"), ["not a regular file"]),
    "fifo": (_fifo, ["not a regular file"]),
    "symlink_to_dev_zero": (_symlink("/dev/zero"), ["not a regular file"]),
    "folder": (_folder, ["is a folder"]),
    "missing": (lambda p: p, ["does not exist"]),
    "dangling_symlink": (_symlink("/nonexistent/target"), ["does not exist"]),
    "symlink_loop": (lambda p: (p.symlink_to(p.name), p)[1], ["cannot open"]),
    "latin1": (_write("prompt = \"caf\xe9\"\n".encode("latin-1")), ["not UTF-8", "iconv"]),
    "utf16": (_write('prompt = "t1"\n'.encode("utf-16")), ["not UTF-8"]),
    "binary": (_write(b"\x7fELF\x02\x01\x01\x00" + bytes(64)), ["binary"]),
    "huge_sparse": (_sparse(2**25), ["larger than"]),
}


@pytest.mark.parametrize("case", sorted(SPECIAL_FILES))
def test_config_file_of_every_kind(case, tmp_path, no_model_load):
    make, fragments = SPECIAL_FILES[case]
    path = make(tmp_path / "config.toml")
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(path), "--out", str(tmp_path / "out")])
    message = assert_clean_refusal(rc, err, "config file", *fragments)
    assert str(path) in message or case.startswith("dev_")
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(SPECIAL_FILES))
def test_prompts_file_of_every_kind(case, tmp_path, no_model_load):
    """issue: a prompts_file in Latin-1 or a binary file gave a UnicodeDecodeError traceback."""
    make, fragments = SPECIAL_FILES[case]
    prompts = make(tmp_path / "prompts.txt")
    config = tmp_path / "exp.toml"
    config.write_text(f'prompts_file = "{prompts.name if prompts.parent == tmp_path else prompts}"\nmax_steps = 1\n')
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "out")])
    assert_clean_refusal(rc, err, "prompts_file", *fragments)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_a_utf8_file_with_or_without_bom_is_read(encoding, tmp_path):
    from tempo_lens.experiment import load_config

    (tmp_path / "prompts.txt").write_text("Le café\n# a comment\n\nt1 t5\n", encoding=encoding)
    (tmp_path / "exp.toml").write_text('prompts_file = "prompts.txt"\nthreshold = 0.2\n', encoding=encoding)
    config = load_config(tmp_path / "exp.toml")
    assert config.prompts == ["Le café", "t1 t5"] and config.generation.threshold == 0.2


# ---- config keys --------------------------------------------------------------------------------

CONFIG_KEYS = {
    "capture_layers_empty": ('prompt = "t1"\n[capture]\nlayers = []\n', ["[capture] layers is empty"]),  # issue
    "capture_steps_empty": ('prompt = "t1"\n[capture]\nsteps = []\n', ["[capture] steps is empty"]),
    "capture_false": ('prompt = "t1"\ncapture = false\n', ["capture = false", "always captures"]),
    "capture_steps_never_reached": ('prompt = "t1"\nmax_steps = 2\n[capture]\nsteps = [5]\n', ["never reached", "max_steps 2"]),
    "name_escapes": ('prompt = "t1"\nname = "../../elsewhere"\n', ["name must be a plain folder name"]),
    "name_with_slash": ('prompt = "t1"\nname = "a/b"\n', ["plain folder name"]),
    "name_hidden": ('prompt = "t1"\nname = ".exp"\n', ["plain folder name"]),
    "name_empty": ('prompt = "t1"\nname = ""\n', ["plain folder name"]),
    "name_too_long": ('prompt = "t1"\nname = "' + "x" * 101 + '"\n', ["at most 100"]),
    "name_newline": ('prompt = "t1"\nname = "a\\nb"\n', ["plain folder name"]),
    "model_empty": ('prompt = "t1"\nmodel = ""\n', ["model is empty"]),
    "model_blank": ('prompt = "t1"\nmodel = "  "\n', ["model is empty"]),
    "modes_repeated": ('prompt = "t1"\nmodes = ["isolated", "isolated"]\n', ["each once"]),
    "mode_and_modes": ('prompt = "t1"\nmode = "visible"\nmodes = ["isolated"]\n', ["mode or modes, not both"]),
    "controls_repeated": ('prompt = "t1"\ncontrols = ["toggled_mask", "toggled_mask"]\n', ["each once"]),
    "prompt_and_prompts": ('prompt = "t1"\nprompts = ["t2"]\n', ["one of prompt, prompts or prompts_file"]),
    "prompts_mixed_types": ('prompts = ["t1", 2]\n', ["non-empty list of non-empty strings"]),
    "prompts_file_blank": ('prompts_file = "  "\n', ["prompts_file must be a string"]),
    "threshold_nan": ('prompt = "t1"\nthreshold = nan\n', ["threshold", "(0, 1]"]),
    "threshold_inf": ('prompt = "t1"\nthreshold = inf\n', ["threshold", "(0, 1]"]),
    "threshold_date": ('prompt = "t1"\nthreshold = 1979-05-27\n', ["threshold"]),
    "max_steps_inf": ('prompt = "t1"\nmax_steps = inf\n', ["max_steps", "integer"]),
    "max_parallel_absurd": ('prompt = "t1"\nmax_parallel = 10000000\n', ["max_parallel", "at most"]),
    "min_steps_above_max": ('prompt = "t1"\nmin_steps = 9\nmax_steps = 3\n', ["min_steps (9)", "max_steps (3)"]),
    "schedule_bezier_point": ('prompt = "t1"\nthreshold_schedule = "bezier:0.3:2:0.5"\n', ["control points"]),
    "batch_size_bool": ('prompt = "t1"\nbatch_size = true\n', ["batch_size", "integer"]),
    "batch_size_zero": ('prompt = "t1"\nbatch_size = 0\n', ["batch_size", ">= 1"]),
    "similarity_nan": ('prompt = "t1"\n[pruning]\nstrategy = "similarity"\nsimilarity_threshold = nan\n', ["similarity threshold", "finite"]),
    "similarity_layer_fraction": ('prompt = "t1"\n[pruning]\nstrategy = "similarity"\nlayer = 1.5\n', ["layer must be an integer"]),
    "pruning_layers_empty": ('prompt = "t1"\n[pruning]\nlayers = []\n', ["pruning layers is empty"]),
    "pruning_weights_inf": ('prompt = "t1"\n[pruning]\nlayer_weights = [inf, 1.0, 1.0]\n', ["layer_weights", "finite"]),
    "pruning_threshold_inf": ('prompt = "t1"\n[pruning]\nattention_threshold = inf\n', ["finite"]),
    "pruning_table_in_table": ('prompt = "t1"\n[pruning.extra]\nx = 1\n', ["unknown key 'extra'"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_KEYS))
def test_config_key_refused_before_the_model_loads(case, tmp_path, no_model_load):
    text, fragments = CONFIG_KEYS[case]
    config = tmp_path / "exp.toml"
    config.write_text(text)
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "out")])
    assert_clean_refusal(rc, err, str(config), *fragments)
    assert snapshot(tmp_path) == before


# ---- --json is strict JSON ----------------------------------------------------------------------

def _strict(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_has_null_for_nan_probabilities(tiny_dirs, monkeypatch, capsys):
    """A model that yields NaN probabilities (e.g. float16 overflow) still gives strict JSON."""
    import tempo_lens.generation.row as row

    real = row.select_siblings

    def nan_probs(*args, **kwargs):
        ids, probs, above = real(*args, **kwargs)
        return ids, [float("nan")] * len(ids), above

    monkeypatch.setattr(row, "select_siblings", nan_probs)
    rc, out, err = run_cli(["generate", "t1 t5", "--model", str(tiny_dirs["llama"]), "--max-steps", "2", "--json"])
    assert rc == 0, err
    probs = [p for step in _strict(out)["steps"] for p in step["probs"]]
    assert probs and all(p is None for p in probs)


def test_result_json_replaces_every_non_finite_number(tiny_llama):
    from tempo_lens.generation import generate
    from tempo_lens.layout import TokenLayout

    result = generate(tiny_llama, [1, 17, 42], threshold=1e-6, max_parallel=3, max_steps=2)
    first = result.layout.step_range(0)
    columns = result.layout.to_dict()
    columns["probs"][first.start] = float("inf")
    result.layout = layout = TokenLayout.from_dict(columns)
    layout.prune([first.start + 1], at_step=1, score=float("nan"))
    data = result.to_json_dict()
    text = json.dumps(data, allow_nan=False)  # raises on NaN / inf
    step = _strict(text)["steps"][0]
    assert step["probs"][0] is None and step["pruned"][1] is True and step["prune_score"][1] is None
    assert all(p is None or math.isfinite(p) for s in data["steps"] for p in s["probs"])
