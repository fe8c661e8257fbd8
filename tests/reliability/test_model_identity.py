"""Issue 32, class 1: a model is identified by what it is (a fingerprint of its files), not by its name;
class 9: its parameter count is one rule for every backend."""

from __future__ import annotations

import json
import shutil

import pytest

from tempo_lens.errors import ConfigError
from tempo_lens.experiment import load_experiment, save_experiment
from tests.helpers import build_tiny_model
from tests.reliability.conftest import assert_clean_refusal, run_cli
from tests.reliability.test_input_bounds import _analyze_folder, generated  # noqa: F401  (a fixture)


@pytest.fixture
def model_dir(tiny_dirs, tmp_path):
    """A copy of the tiny Llama in a folder of our own, so the test can change its files."""
    return shutil.copytree(tiny_dirs["llama"], tmp_path / "model")


def _change_weights(directory):
    build_tiny_model("llama", directory, seed=1)  # other weights, same architecture, same file names


def _change_config(directory):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["rms_norm_eps"] = 0.5  # same weights, another model
    path.write_text(json.dumps(config))


def _change_tokenizer(directory):
    path = directory / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["t17"], vocab["t18"] = vocab["t18"], vocab["t17"]  # the same text now means other token ids
    path.write_text(json.dumps(tokenizer))


CHANGES = {"weights": _change_weights, "config": _change_config, "tokenizer": _change_tokenizer}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_rerun_after_the_models_files_changed_generates_again(model_dir, tmp_path, generated, change):  # noqa: F811
    folder = _analyze_folder(tmp_path / "analyses", model_dir)
    assert run_cli(["analyze", str(folder)])[0] == 0
    before = {json.loads((p / "metadata.json").read_text())["model"].get("fingerprint") for p in (folder / "runs").iterdir()}
    CHANGES[change](model_dir)
    generated.clear()
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0, err
    assert "kept the runs" not in err, "runs of the old files were kept under the same model name"
    assert sorted(generated.prompts()) == sorted(["t1 t17 t42 t5", "t1 t17 t42", "t1 t9", "t1 t50 t60"] * 2)
    from tempo_lens.models.identity import fingerprint_of

    after = {json.loads((p / "metadata.json").read_text())["model"]["fingerprint"] for p in (folder / "runs").iterdir()}
    assert after == {fingerprint_of(str(model_dir))} and after.isdisjoint(before) and None not in before


def test_the_same_files_copied_again_keep_the_runs(model_dir, tmp_path, generated):  # noqa: F811
    """Identity is the content: a fresh copy of the same files (new times, new inodes) is the same model."""
    folder = _analyze_folder(tmp_path / "analyses", model_dir)
    assert run_cli(["analyze", str(folder)])[0] == 0
    kept = shutil.copytree(model_dir, tmp_path / "kept")
    shutil.rmtree(model_dir)
    shutil.copytree(kept, model_dir)
    generated.clear()
    rc, _, err = run_cli(["analyze", str(folder)])
    assert rc == 0 and generated == [] and "kept the runs" in err


def test_files_are_hashed_once_until_they_change(model_dir, monkeypatch):
    import tempo_lens.models.identity as identity
    from tempo_lens.models.identity import folder_fingerprint

    hashed = []
    real = identity.sha256_of
    monkeypatch.setattr(identity, "sha256_of", lambda *paths: hashed.append(paths) or real(*paths))
    first = folder_fingerprint(model_dir)
    assert hashed, "the first fingerprint hashes the files"
    hashed.clear()
    assert folder_fingerprint(model_dir) == first and hashed == [], "an unchanged file was hashed again"
    _change_config(model_dir)
    assert folder_fingerprint(model_dir) != first
    assert [p[0].name for p in hashed] == ["config.json"], "only the changed file is hashed again"


@pytest.fixture
def run_of(tmp_path):
    from tempo_lens import load_model
    from tempo_lens.experiment import config_from_dict, run_experiment

    def run(model_dir, mode="isolated"):
        config = config_from_dict({"name": f"exp1_{mode}", "prompt": "t1 t17 t42 t5", "mode": mode, "threshold": 1e-6,
                                   "max_parallel": 2, "max_steps": 2, "model": str(model_dir)})
        return run_experiment(config, load_model(str(model_dir), device="cpu"))

    return run


def test_a_report_refuses_runs_of_one_name_but_different_files(model_dir, tmp_path, run_of):
    from tempo_lens import load_model
    from tempo_lens.experiment import config_from_dict, run_experiment

    isolated = run_of(model_dir, "isolated")
    _change_weights(model_dir)
    config = config_from_dict({"name": "exp1_visible", "prompt": "t1 t17 t42 t5", "mode": "visible", "threshold": 1e-6,
                               "max_parallel": 2, "max_steps": 2, "model": str(model_dir)})
    visible = run_experiment(config, load_model(str(model_dir), device="cpu"))
    assert isolated.model["name"] == visible.model["name"] and isolated.model["fingerprint"] != visible.model["fingerprint"]
    save_experiment(isolated, tmp_path / "saved" / "exp1_isolated")
    save_experiment(visible, tmp_path / "saved" / "exp1_visible")
    rc, _, err = run_cli(["analyze", str(tmp_path / "saved")])
    assert_clean_refusal(rc, err, "different model files", "exp1_isolated", "exp1_visible")
    assert not (tmp_path / "saved" / "report").exists()


def test_runs_saved_before_fingerprints_load_are_regenerated_and_are_not_mixed(model_dir, tmp_path, run_of, generated):  # noqa: F811
    """The rule for old runs: they load (fingerprint unknown); a rerun regenerates them; a report does not mix them with
    runs of a known fingerprint (whether the model was the same cannot be told)."""
    import dataclasses

    from tempo_lens.app.outputs import OutputPlan
    from tempo_lens.app.analyze import check_one_model

    old = run_of(model_dir, "isolated")
    old.model.pop("fingerprint")
    path = save_experiment(old, tmp_path / "old" / "exp1_isolated")
    assert load_experiment(path).model.get("fingerprint") is None
    new = run_of(model_dir, "visible")
    with pytest.raises(ConfigError, match="unknown"):
        check_one_model({"exp1_isolated": load_experiment(path), "exp1_visible": new})

    folder = _analyze_folder(tmp_path / "analyses", model_dir)
    assert run_cli(["analyze", str(folder)])[0] == 0
    plan = OutputPlan(folder)
    from tempo_lens.experiment import load_config

    config = dataclasses.replace(load_config(folder / "multi.toml"), model=str(model_dir))
    assert plan.finished_run("multi", config, "bridge") is not None
    experiment = load_experiment(folder / "runs" / "multi")
    experiment.model.pop("fingerprint")
    plan.save_run(experiment, "multi")  # as an older version wrote it, recorded in the manifest
    assert OutputPlan(folder).finished_run("multi", config, "bridge") is None, "an unknown fingerprint was trusted"


def test_a_streamed_runs_progress_belongs_to_the_models_files(model_dir, tmp_path):
    from tempo_lens.experiment import config_from_dict, stream

    config = config_from_dict({"prompts": ["t1 t2", "t1 t3"], "model": str(model_dir)})
    before = stream.progress_folder(tmp_path / "out", config, None)
    _change_weights(model_dir)
    assert stream.progress_folder(tmp_path / "out", config, None) != before, "chunks of the old weights would be resumed"


# ---- class 9: one parameter count for every backend ---------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # untied and tied embeddings
def test_the_parameter_count_is_the_checkpoints_for_every_backend(tiny_dirs, arch):
    from transformers import AutoModelForCausalLM

    from tempo_lens import load_model
    from tempo_lens.experiment import model_facts

    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch])
    expected = hf.num_parameters()  # Hugging Face's count of the checkpoint (tied weights once)
    counts = {"bridge": model_facts(load_model(str(tiny_dirs[arch]), device="cpu"))["n_params"]}
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        pass
    else:
        counts["hooked"] = model_facts(load_model(str(tiny_dirs[arch]), backend="hooked", device="cpu"))["n_params"]
    assert counts == dict.fromkeys(counts, expected)
