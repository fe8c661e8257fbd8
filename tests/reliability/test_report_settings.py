"""Issue 32, class 2: a report compares only runs made the same way (model and every setting that changes a
generation); anything else is refused naming the difference, also when a run folder is replaced while analyze runs."""

from __future__ import annotations

import pytest

from tempo_lens.experiment import config_from_dict, run_experiment, save_experiment
from tests.reliability.conftest import assert_clean_refusal, run_cli

PAIR = 'prompt = "t1 t17 t42 t5"\ncontrols = ["toggled_mask"]\n'
SAME = {"threshold": "1e-6", "max_parallel": "2", "max_steps": "2"}
# each setting that changes the generation, with a value for the visible config that differs from the isolated one
DIFFERENT = {
    "threshold": "0.05",
    "max_steps": "3",
    "max_parallel": "3",
    "min_steps": "1",
    "next_token_source": '"top"',
    "threshold_schedule": '"bezier:0.3"',
    "chat": "true",
}


def _configs(folder, visible_change: dict[str, str], model=None):
    folder.mkdir(exist_ok=True)
    for mode in ("isolated", "visible"):
        settings = dict(SAME, **(visible_change if mode == "visible" else {}))
        lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
        model_line = f'model = "{model}"\n' if model else ""
        (folder / f"exp1_{mode}.toml").write_text(f'name = "exp1_{mode}"\nmode = "{mode}"\n{model_line}' + PAIR + lines)
    return folder


@pytest.mark.parametrize("setting", list(DIFFERENT))
def test_configs_of_a_pair_with_different_settings_are_refused_before_the_model_loads(tmp_path, setting, no_model_load):
    folder = _configs(tmp_path / "analyses", {setting: DIFFERENT[setting]})
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, "different settings", setting, "exp1_isolated", "exp1_visible")
    assert not (folder / "runs").exists()


def test_a_pruning_config_may_differ_in_pruning_only(tmp_path, no_model_load):
    folder = _configs(tmp_path / "analyses", {})
    (folder / "pruning.toml").write_text('name = "pruning"\nprompts = ["t1 t2", "t1 t3"]\n'
                                         + "".join(f"{k} = {v}\n" for k, v in SAME.items())
                                         + "max_steps = 3\n[pruning]\nattention_threshold = 0.5\n".replace("max_steps = 3\n", ""))
    (folder / "multi.toml").write_text('name = "multi"\nprompts = ["t1 t2", "t1 t3"]\nmodes = ["isolated", "visible"]\n'
                                       'threshold = 1e-6\nmax_parallel = 2\nmax_steps = 3\n')
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, "different settings", "max_steps", "multi: 3")
    assert "pruning (" not in err, "the pruning experiment's own pruning was named as a difference"


def _saved(model, folder, name, mode, **settings):
    config = config_from_dict({"name": name, "prompt": "t1 t17 t42 t5", "mode": mode, "model": "m",
                               **{k: float(v) if "." in v or "e" in v else int(v) for k, v in SAME.items()}, **settings})
    return save_experiment(run_experiment(config, model), folder / name)


@pytest.mark.parametrize("change", [{"threshold": 0.05}, {"max_steps": 3}, {"max_parallel": 3}, {"next_token_source": "top"}])
def test_saved_runs_of_different_settings_are_refused_naming_the_setting(tiny_llama, tmp_path, change):
    saved = tmp_path / "saved"
    _saved(tiny_llama, saved, "exp1_isolated", "isolated")
    _saved(tiny_llama, saved, "exp1_visible", "visible", **change)
    rc, _, err = run_cli(["analyze", str(saved)])
    (setting,) = change
    assert_clean_refusal(rc, err, "different settings", setting, "exp1_isolated", "exp1_visible")
    assert not (saved / "report").exists()


@pytest.mark.parametrize("fact, value", [("backend", "hooked"), ("fingerprint", "0" * 20), ("dtype", "bfloat16")])
def test_saved_runs_of_another_backend_dtype_or_model_files_are_refused(tiny_llama, tmp_path, fact, value):
    from tempo_lens.experiment import load_experiment

    saved = tmp_path / "saved"
    _saved(tiny_llama, saved, "exp1_isolated", "isolated")
    path = _saved(tiny_llama, saved, "exp1_visible", "visible")
    experiment = load_experiment(path)
    experiment.model[fact] = value  # as if made on another backend, at another dtype, or with other files
    save_experiment(experiment, path, overwrite=True)
    rc, _, err = run_cli(["analyze", str(saved)])
    assert_clean_refusal(rc, err, "exp1_isolated", "exp1_visible")
    assert not (saved / "report").exists()


def test_a_run_folder_replaced_while_analyze_ran_is_refused_not_reported(tiny_dirs, tmp_path, monkeypatch):
    """A concurrent `run --overwrite` replaces runs/exp1_visible after analyze wrote it and before it reads it back."""
    import tempo_lens.app.analyze as pipeline

    folder = _configs(tmp_path / "analyses", {}, model=tiny_dirs["llama"])
    other = tmp_path / "other.toml"
    other.write_text(f'name = "exp1_visible"\nmode = "visible"\nmodel = "{tiny_dirs["llama"]}"\n' + PAIR
                     + "".join(f"{k} = {v}\n" for k, v in dict(SAME, threshold="0.05").items()))
    real = pipeline.run_configs

    def then_replaced(*args, **kwargs):
        paths = real(*args, **kwargs)
        assert run_cli(["run", str(other), "--out", str(paths["exp1_visible"]), "--overwrite"])[0] == 0
        return paths

    monkeypatch.setattr(pipeline, "run_configs", then_replaced)
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, str(folder / "runs" / "exp1_visible"), "replaced by another process")
    assert not (folder / "report").exists()
