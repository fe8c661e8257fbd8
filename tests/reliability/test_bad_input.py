"""Bad input tried the way a new user would: through the CLI (in-process and as a real process) and the API.

Every refusal is one ``error:`` line that names the problem and the fix, a non-zero exit, no traceback,
and nothing that was on disk before is lost or changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tempo_lens.errors import ExperimentFileError, InvalidInputError, ModelUnavailableError, TempoLensError
from tempo_lens.experiment import FORMAT_VERSION, config_from_dict, load_experiment, run_experiment, save_experiment
from tempo_lens.generation import generate
from tests.reliability.conftest import CLI, SHORT_CTX, assert_clean_refusal, run_cli, snapshot, subprocess_env

IDS = [1, 17, 42, 5]


# ---- CLI: thresholds, prompts, steps ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "1.5", "nan", "abc", "inf", "", "1e-400", "-0"])
def test_cli_bad_threshold(tiny_dirs, value, no_forward):
    rc, out, err = run_cli(["generate", "t1 t5", "--model", str(tiny_dirs["llama"]), f"--threshold={value}"])
    assert_clean_refusal(rc, err, "threshold", "(0, 1]")
    assert out == ""


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n "])
def test_cli_empty_prompt(tiny_dirs, prompt, no_forward):
    rc, _, err = run_cli(["generate", prompt, "--model", str(tiny_dirs["llama"])])
    assert_clean_refusal(rc, err, "prompt is empty", "e.g.")


def test_cli_non_utf8_prompt_in_process(tiny_dirs, no_forward):
    # how Python hands undecodable argv bytes (b"\xff\xfe") to main(): lone surrogates
    rc, _, err = run_cli(["generate", "\udcff\udcfe", "--model", str(tiny_dirs["llama"])])
    assert_clean_refusal(rc, err, "UTF-8")


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--max-steps", "0"], ["--max-steps", ">= 1"]),
        (["--max-steps", "-5"], ["--max-steps"]),
        (["--max-steps", "1e3"], ["--max-steps", "integer"]),
        (["--max-parallel", "0"], ["--max-parallel"]),
        (["--min-steps", "-1"], ["--min-steps"]),
        (["--prune-threshold", "-1"], ["prune-threshold", ">= 0"]),
        (["--prune-threshold", "nan"], ["prune-threshold"]),
        (["--prune-threshold", "abc"], ["prune-threshold"]),
        (["--threshold-schedule", "relu:0.5:2"], ["knee"]),
        (["--threshold-schedule", "bezier:0.5:abc"], ["bezier:FINAL"]),
        (["--threshold-schedule", "bezier:2"], ["final threshold"]),
        (["--threshold-schedule", "cosine:0.5"], ["threshold schedule"]),
        (["--mode", "both"], ["--mode", "isolated"]),
        (["--next-token-source", "first"], ["mixture"]),
        (["--seed", "1"], ["--seed", "unrecognized"]),  # selection is deterministic: there is no seed
        (["--chat"], ["chat template"]),
    ],
)
def test_cli_bad_options(tiny_dirs, args, fragments, no_forward):
    rc, _, err = run_cli(["generate", "t1 t5", "--model", str(tiny_dirs["llama"]), *args])
    assert_clean_refusal(rc, err, *fragments)


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["generate"], ["run"]])
def test_cli_usage_mistakes_are_one_error_line(argv):
    rc, _, err = run_cli(argv)
    assert_clean_refusal(rc, err, "--help")


def test_cli_huge_max_steps_fails_fast_without_generating(tiny_dirs, no_forward):
    started = time.perf_counter()
    rc, out, err = run_cli(["generate", "t1 t5", "--model", str(tiny_dirs["llama"]), "--max-steps", str(10**9)])
    elapsed = time.perf_counter() - started
    message = assert_clean_refusal(rc, err, "context", "1000000000", "lower max_steps")
    assert "(3 tokens)" in message  # the real prompt length (BOS + 2 words), not a placeholder
    assert out == "" and elapsed < 15


def test_cli_prompt_past_the_context(short_ctx_dir, no_forward):
    long_prompt = " ".join(f"t{5 + i}" for i in range(SHORT_CTX + 4))
    rc, _, err = run_cli(["generate", long_prompt, "--model", str(short_ctx_dir), "--max-steps", "1"])
    assert_clean_refusal(rc, err, "context of 16", "shorten the prompt")


@pytest.mark.parametrize(
    "model, fragments",
    [
        ("no-such-org/no-such-model", ["no-such-org/no-such-model", "offline", "local directory"]),
        ("./definitely-not-here", ["no model directory", "config.json"]),
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("bad name with spaces!", ["valid hugging face model name"]),
    ],
)
def test_cli_unknown_model_offline(model, fragments, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, _, err = run_cli(["generate", "The cat sat on the", "--model", model, "--max-steps", "1"])
    assert_clean_refusal(rc, err, *fragments)


def test_cli_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["generate", "t1", "--model", str(tmp_path), "--max-steps", "1"])
    assert_clean_refusal(rc, err, "is unusable", "no config.json", "pass a folder with config.json")
    assert snapshot(tmp_path) == before


# ---- CLI as a real process -------------------------------------------------------------------------

def test_real_process_non_utf8_argv_bytes(tmp_path):
    result = subprocess.run([str(CLI).encode(), b"generate", b"\xff\xfe"], capture_output=True, env=subprocess_env(),
                            cwd=tmp_path, timeout=120)
    err = result.stderr.decode("utf-8", "replace")
    assert_clean_refusal(result.returncode, err, "UTF-8")
    assert list(tmp_path.iterdir()) == []


def test_real_process_bad_threshold_and_usage(tmp_path):
    for argv, fragment in ([["generate", "t1", "--threshold", "abc"], "threshold"], [["generate"], "prompt"]):
        result = subprocess.run([str(CLI), *argv], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path,
                                timeout=120)
        assert result.returncode == 2
        assert result.stdout == ""
        assert_clean_refusal(result.returncode, result.stderr, fragment)


# ---- Python API ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "prompt, fragment",
    [
        (b"\xff\xfe", "UTF-8"),
        ([-1, 5], "outside the vocabulary"),
        ([5, 96], "outside the vocabulary"),
        (None, "token ids"),
        ([[1, 2]], "token ids"),
        (["t1", "t2"], "token ids"),
        (torch.tensor([], dtype=torch.long), "empty"),
        ("\n\n", "empty"),
    ],
)
def test_api_bad_prompts(tiny_llama, prompt, fragment, no_forward):
    with pytest.raises(InvalidInputError, match=fragment):
        generate(tiny_llama, prompt, max_steps=1)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(threshold=True), "threshold"),
        (dict(threshold=float("inf")), "threshold"),
        (dict(max_steps=10**9), "context"),
        (dict(max_steps=2.5), "max_steps"),
        (dict(max_steps=True), "max_steps"),
        (dict(min_steps=-1), "min_steps"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**40), "seed"),
        (dict(threshold_schedule="relu:0.5"), "schedule"),
    ],
)
def test_api_bad_arguments_refused_before_any_forward(tiny_llama, kwargs, fragment, no_forward):
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match=fragment):
        generate(tiny_llama, IDS, **kwargs)
    assert time.perf_counter() - started < 2


def test_api_context_edge(short_ctx_model):
    prompt = list(range(5, 5 + SHORT_CTX - 2))
    result = generate(short_ctx_model, prompt, threshold=1.0, max_steps=2)  # exactly fills the context
    assert result.layout.logical_positions[-1] == SHORT_CTX - 1
    with pytest.raises(InvalidInputError, match=f"{SHORT_CTX + 1} logical positions exceeds the model's context of {SHORT_CTX}"):
        generate(short_ctx_model, prompt, threshold=1.0, max_steps=3)


@pytest.mark.parametrize(
    "pruning, fragment",
    [
        (dict(layer_weights=[1, 2]), "2 weights for 3 layers"),
        (dict(layers=[0, 1], layer_weights=[1, -1]), ">= 0"),
        (dict(layer_weights=[0, 0, 0]), "positive sum"),
        (dict(layers=["a"]), "layer indices"),
        (dict(layers=[7]), r"pruning layer \[7\] outside 0\.\.2"),
        (dict(attention_threshold=float("nan")), ">= 0"),
    ],
)
def test_api_bad_pruning_settings(tiny_llama, pruning, fragment, no_forward):
    from tempo_lens.pruning import AttentionPruning

    with pytest.raises(InvalidInputError, match=fragment):
        generate(tiny_llama, IDS, threshold=1e-6, max_parallel=3, max_steps=2, pruning=AttentionPruning(**pruning))


def test_api_bad_capture_layers(tiny_llama, no_forward):
    from tempo_lens.capture import CaptureSpec

    with pytest.raises(InvalidInputError, match="capture layers"):
        generate(tiny_llama, IDS, max_steps=1, capture=CaptureSpec(layers=[5]))


def test_api_unknown_model_offline(monkeypatch):
    from tempo_lens import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("no-such-org/no-such-model", "   "):
        with pytest.raises(ModelUnavailableError):
            load_model(name)


# ---- tempo-lens run: config files -------------------------------------------------------------------

BAD_CONFIGS = {
    "missing_prompt": ('threshold = 0.1\n', ["missing key 'prompt'"]),
    "misspelled_top": ('promt = "t1"\n', ["did you mean 'prompt'"]),
    "misspelled_threshold": ('prompt = "t1"\nthreshhold = 0.2\n', ["did you mean 'threshold'"]),
    "misspelled_max_steps": ('prompt = "t1"\nmax_step = 2\n', ["did you mean 'max_steps'"]),
    "misspelled_pruning": ('prompt = "t1"\n[pruning]\nattention_treshold = 1\n', ["did you mean 'attention_threshold'"]),
    "misspelled_capture": ('prompt = "t1"\n[capture]\nlayer = [0]\n', ["did you mean 'layers'"]),
    "threshold_zero": ('prompt = "t1"\nthreshold = 0\n', ["threshold"]),
    "threshold_string": ('prompt = "t1"\nthreshold = "abc"\n', ["threshold", "(0, 1]"]),
    "max_steps_float": ('prompt = "t1"\nmax_steps = 2.5\n', ["max_steps", "integer"]),
    "min_steps_negative": ('prompt = "t1"\nmin_steps = -3\n', ["min_steps"]),
    "seed_negative": ('prompt = "t1"\nseed = -1\n', ["seed"]),
    "seed_huge": ('prompt = "t1"\nseed = 99999999999999999\n', ["seed"]),
    "next_token_source": ('prompt = "t1"\nnext_token_source = "first"\n', ["next_token_source", "mixture"]),
    "empty_prompt": ('prompt = "  "\n', ["non-empty"]),
    "prompt_number": ('prompt = 5\n', ["non-empty list"]),
    "modes_empty": ('prompt = "t1"\nmodes = []\n', ["mode"]),
    "mode_unknown": ('prompt = "t1"\nmode = "both"\n', ["mode"]),
    "controls_unknown": ('prompt = "t1"\ncontrols = ["shuffle"]\n', ["controls"]),
    "model_number": ('prompt = "t1"\nmodel = 5\n', ["model must be a string"]),
    "name_list": ('prompt = "t1"\nname = ["a"]\n', ["name must be a string"]),
    "prompts_file_missing": ('prompts_file = "nope.txt"\n', ["prompts_file", "does not exist"]),
    "prompts_file_number": ('prompts_file = 5\n', ["prompts_file must be a string"]),
    "pruning_not_table": ('prompt = "t1"\npruning = 0.5\n', ["pruning", "table"]),
    "pruning_weights_zero": ('prompt = "t1"\n[pruning]\nlayer_weights = [0, 0, 0]\n', ["positive sum"]),
    "pruning_weights_string": ('prompt = "t1"\n[pruning]\nlayer_weights = "abc"\n', ["list of numbers"]),
    "pruning_threshold_negative": ('prompt = "t1"\n[pruning]\nattention_threshold = -0.5\n', [">= 0"]),
    "distance_prior_string": ('prompt = "t1"\n[pruning]\ndistance_prior = "no"\n', ["true or false"]),
    "capture_steps_negative": ('prompt = "t1"\n[capture]\nsteps = [-5]\n', ["capture.steps"]),
    "not_toml": ('prompt = "t1\n', ["not valid TOML"]),
    "binary": (b"\xff\xfe\x00bad", ["config file", "binary"]),
}


@pytest.fixture(scope="module")
def saved_experiment(tiny_llama, tmp_path_factory) -> Path:
    config = config_from_dict({"name": "tiny", "prompts": ["t1 t17 t42", "t1 t9"], "threshold": 1e-6,
                               "max_parallel": 3, "max_steps": 2, "controls": ["unique_positions"]})
    experiment = run_experiment(config, tiny_llama)
    return save_experiment(experiment, tmp_path_factory.mktemp("saved") / "exp")


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_cli_run_bad_config_keeps_existing_results(case, saved_experiment, tmp_path, no_forward):
    text, fragments = BAD_CONFIGS[case]
    out = tmp_path / "out"
    shutil.copytree(saved_experiment, out)
    config = tmp_path / f"{case}.toml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(config), "--out", str(out), "--overwrite"])
    assert_clean_refusal(rc, err, *fragments)
    assert snapshot(tmp_path) == before
    assert load_experiment(out).runs


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--shard", "3/2"], ["--shard", "0 <= i < n"]),
        (["--shard", "x"], ["--shard", "i/n"]),
    ],
)
def test_cli_run_bad_shard(tmp_path, argv, fragments, no_forward):
    config = tmp_path / "ok.toml"
    config.write_text('prompt = "t1"\n')
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "out"), *argv])
    assert_clean_refusal(rc, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_cli_run_config_is_a_directory_or_missing(tmp_path):
    for target, fragment in ((tmp_path, "is a folder"), (tmp_path / "missing.toml", "does not exist")):
        rc, _, err = run_cli(["run", str(target)])
        assert_clean_refusal(rc, err, fragment)


def test_cli_run_capture_layer_outside_the_model(tiny_dirs, tmp_path, no_forward):
    config = tmp_path / "cap.toml"
    config.write_text(f'prompt = "t1 t5"\nmodel = "{tiny_dirs["llama"]}"\nmax_steps = 1\n[capture]\nlayers = [99]\n')
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "out")])
    assert_clean_refusal(rc, err, "capture layers [99]")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap.toml"]


@pytest.mark.parametrize("kind", ["folder_with_other_files", "file", "experiment_without_overwrite"])
def test_cli_run_never_replaces_what_is_not_its_own(kind, saved_experiment, tiny_dirs, tmp_path, no_forward):
    """--overwrite replaces an experiment folder, never a user's folder or file (a mistyped --out)."""
    config = tmp_path / "ok.toml"
    config.write_text(f'prompt = "t1 t5"\nmodel = "{tiny_dirs["llama"]}"\nmax_steps = 1\n')
    out = tmp_path / "target"
    overwrite = ["--overwrite"]
    if kind == "folder_with_other_files":
        out.mkdir()
        (out / "thesis.tex").write_text("two years of work")
        (out / "data").mkdir()
        (out / "data" / "measurements.csv").write_text("1,2,3\n")
        fragments = ["not part of an experiment", "thesis.tex"]
    elif kind == "file":
        out.write_text("precious")
        fragments = ["not an experiment folder"]
    else:
        shutil.copytree(saved_experiment, out)
        overwrite, fragments = [], ["already exists", "--overwrite"]
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(config), "--out", str(out), *overwrite])
    assert_clean_refusal(rc, err, *fragments)
    assert snapshot(tmp_path) == before


def test_cli_run_output_path_through_a_file(tiny_dirs, tmp_path, no_forward):
    config = tmp_path / "ok.toml"
    config.write_text(f'prompt = "t1 t5"\nmodel = "{tiny_dirs["llama"]}"\nmax_steps = 1\nthreshold = 1.0\n')
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(config), "--out", str(blocker / "exp")])
    assert_clean_refusal(rc, err, "blocker is a file", "choose another --out")
    assert snapshot(tmp_path) == before


# ---- experiment folders via load_experiment ---------------------------------------------------------

def _edit_meta(change):
    def apply(folder: Path) -> None:
        path = folder / "metadata.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return apply


def _truncate_meta(folder: Path) -> None:
    path = folder / "metadata.json"
    text = path.read_bytes()
    path.write_bytes(text[: len(text) * 2 // 3])


def _replace(name: str, make):
    def apply(folder: Path) -> None:
        (folder / name).unlink()
        make(folder / name)

    return apply


FOLDER_DAMAGE = {
    # truncated
    "metadata_cut_two_thirds": (_truncate_meta, ["corrupt"]),
    "metadata_empty": (lambda f: (f / "metadata.json").write_text(""), ["corrupt"]),
    "arrays_empty": (lambda f: (f / "attention.npz").write_bytes(b""), ["checksum"]),
    # edited
    "no_config": (_edit_meta(lambda d: d.pop("config")), ["metadata"]),
    "no_model": (_edit_meta(lambda d: d.pop("model")), ["metadata"]),
    "no_runs": (_edit_meta(lambda d: d.pop("runs")), ["metadata"]),
    "runs_not_a_list": (_edit_meta(lambda d: d.__setitem__("runs", 5)), ["metadata"]),
    "kind_changed": (_edit_meta(lambda d: d.__setitem__("kind", "something.else")), ["not a tempo_lens experiment"]),
    "json_list": (lambda f: (f / "metadata.json").write_text("[1, 2]"), ["not a tempo_lens experiment"]),
    "checksum_removed": (_edit_meta(lambda d: d.pop("arrays_sha256")), ["arrays_sha256", "missing"]),
    "positions_edited": (_edit_meta(lambda d: d["runs"][0]["layout"]["logical_positions"].__setitem__(-1, 0)), ["logical position"]),
    "step_added": (_edit_meta(lambda d: d["runs"][0]["steps"].append(7)), ["metadata"]),
    "token_texts_removed": (_edit_meta(lambda d: d["runs"][0]["token_strings"].pop()), ["token texts"]),
    "layers_edited": (_edit_meta(lambda d: d["runs"][0].__setitem__("layers", [0])), ["checksum"]),
    "layout_nulled": (_edit_meta(lambda d: d["runs"][0].__setitem__("layout", None)), ["metadata"]),
    "token_id_nulled": (_edit_meta(lambda d: d["runs"][0]["layout"]["token_ids"].__setitem__(0, None)), ["metadata"]),
    "pruned_in_the_future": (_edit_meta(lambda d: d["runs"][0]["layout"]["pruned_at"].__setitem__(-1, 50)), ["lifetime"]),
    # other format versions
    "newer_format": (_edit_meta(lambda d: d.__setitem__("format_version", FORMAT_VERSION + 5)), ["newer", str(FORMAT_VERSION + 5), f"reads version {FORMAT_VERSION}"]),
    "newer_float_format": (_edit_meta(lambda d: d.__setitem__("format_version", FORMAT_VERSION + 0.5)), ["newer"]),
    "format_as_text": (_edit_meta(lambda d: d.__setitem__("format_version", str(FORMAT_VERSION))), ["unknown", f"reads version {FORMAT_VERSION}"]),
    "format_missing": (_edit_meta(lambda d: d.pop("format_version")), ["None", "unknown"]),
    # missing or replaced files
    "metadata_is_a_folder": (_replace("metadata.json", Path.mkdir), ["no metadata.json"]),
    "arrays_is_a_folder": (_replace("attention.npz", Path.mkdir), ["missing attention.npz"]),
    "only_arrays_left": (lambda f: (f / "metadata.json").unlink(), ["interrupted write"]),
    "empty_folder": (lambda f: [p.unlink() for p in f.iterdir()], ["no metadata.json"]),
}


@pytest.mark.parametrize("case", sorted(FOLDER_DAMAGE))
def test_damaged_experiment_folder_is_refused_and_left_as_is(case, saved_experiment, tmp_path):
    damage, fragments = FOLDER_DAMAGE[case]
    folder = tmp_path / "exp"
    shutil.copytree(saved_experiment, folder)
    damage(folder)
    before = snapshot(tmp_path)
    with pytest.raises(ExperimentFileError) as info:
        load_experiment(folder)
    message = str(info.value)
    assert "re-run" in message.lower() or "tempo-lens run" in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    assert snapshot(tmp_path) == before


def test_experiment_path_is_a_file_or_missing(tmp_path):
    (tmp_path / "exp").write_text("not a folder")
    with pytest.raises(ExperimentFileError, match="is a file"):
        load_experiment(tmp_path / "exp")
    with pytest.raises(ExperimentFileError, match="does not exist"):
        load_experiment(tmp_path / "nothing")
    assert (tmp_path / "exp").read_text() == "not a folder"


def test_shards_of_different_experiments_are_not_merged(saved_experiment, tiny_llama, tmp_path):
    other = config_from_dict({"name": "other", "prompt": "t1 t3", "threshold": 1.0, "max_steps": 1})
    save_experiment(run_experiment(other, tiny_llama, shard=(1, 2)), tmp_path / "out" / "shard-1-of-2")
    shutil.copytree(saved_experiment, tmp_path / "out" / "shard-0-of-2")
    with pytest.raises(ExperimentFileError, match="shard-0-of-2 is not a shard"):
        load_experiment(tmp_path / "out")


def test_every_refusal_is_a_tempo_lens_error():
    """The CLI turns exactly these into one line; anything else would be a traceback."""
    from tempo_lens.errors import ConfigError

    for error in (InvalidInputError, ModelUnavailableError, ExperimentFileError, ConfigError):
        assert issubclass(error, TempoLensError)
    assert issubclass(InvalidInputError, ValueError)  # callers catching ValueError keep working
    assert np.isfinite(FORMAT_VERSION)
