"""`tempo-lens analyze` on any folder: configs of any name or saved runs; it never deletes or silently replaces what it did not write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tempo_lens.cli import main

SETTINGS = 'prompt = "t1 t17 t42 t5"\nthreshold = 1e-6\nmax_parallel = 2\nmax_steps = 3\n'


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "my first.toml").write_text('name = "alpha"\nmode = "isolated"\n' + SETTINGS)
    (tmp_path / "other.toml").write_text('name = "beta"\nmode = "visible"\n' + SETTINGS)
    return tmp_path


def analyze(folder: Path, model: Path, *extra: str) -> int:
    return main(["analyze", str(folder), "--model", str(model), *extra])


def test_configs_with_any_names(folder, tiny_dirs):
    assert analyze(folder, tiny_dirs["llama"]) == 0
    md = (folder / "report" / "FINDINGS.md").read_text()
    assert "**Experiments:** alpha vs beta" in md
    assert (folder / "runs" / "alpha" / "metadata.json").is_file() and (folder / "runs" / "beta" / "metadata.json").is_file()


def test_one_config_with_both_modes(tmp_path, tiny_dirs):
    (tmp_path / "pair.toml").write_text('name = "pair"\nmodes = ["isolated", "visible"]\n' + SETTINGS)
    assert analyze(tmp_path, tiny_dirs["llama"]) == 0
    assert "**Experiments:** pair vs pair" in (tmp_path / "report" / "FINDINGS.md").read_text()


def test_a_folder_of_saved_runs(folder, tiny_dirs, tmp_path_factory):
    saved = tmp_path_factory.mktemp("saved")
    for config, name in (("my first.toml", "x"), ("other.toml", "y")):
        assert main(["run", str(folder / config), "--out", str(saved / name), "--model", str(tiny_dirs["llama"])]) == 0
    before = snapshot(saved)
    assert main(["analyze", str(saved)]) == 0
    after = snapshot(saved)
    assert {k: v for k, v in after.items() if k in before} == before  # the runs are untouched
    assert {"report/FINDINGS.md", "report/report.html", "report/metrics.json"} <= set(after)


def test_refuses_run_folders_it_did_not_write(folder, tiny_dirs, capsys):
    target = folder / "runs" / "alpha"
    assert main(["run", str(folder / "my first.toml"), "--out", str(target), "--model", str(tiny_dirs["llama"])]) == 0
    before = snapshot(folder)
    capsys.readouterr()
    assert analyze(folder, Path("no-such-model")) == 2  # refused before the (unloadable) model is touched
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(target) in err and "--overwrite" in err and "Traceback" not in err
    assert snapshot(folder) == before
    assert analyze(folder, tiny_dirs["llama"], "--overwrite") == 0


def test_rerun_replaces_its_own_output_and_keeps_other_files(folder, tiny_dirs):
    assert analyze(folder, tiny_dirs["llama"]) == 0
    report = folder / "report"
    (report / "notes.md").write_text("x\n")
    (report / "screenshot.png").write_bytes(b"\x89PNG fake")
    (report / "sub").mkdir()
    (report / "sub" / "keep.txt").write_text("keep")
    kept = {k: v for k, v in snapshot(folder).items() if k.startswith(("report/notes", "report/screenshot", "report/sub"))}
    assert analyze(folder, tiny_dirs["llama"]) == 0  # its own earlier output: replaced without --overwrite
    assert analyze(folder, tiny_dirs["llama"], "--overwrite") == 0
    after = snapshot(folder)
    assert {k: after.get(k) for k in kept} == kept
    assert not [p for p in report.iterdir() if ".tmp-" in p.name]


def test_an_edited_report_file_is_not_replaced_without_overwrite(folder, tiny_dirs, capsys):
    assert analyze(folder, tiny_dirs["llama"]) == 0
    findings = folder / "report" / "FINDINGS.md"
    findings.write_text(findings.read_text() + "\nmy own conclusion\n")
    before = snapshot(folder)
    assert analyze(folder, tiny_dirs["llama"]) == 2
    assert "FINDINGS.md" in capsys.readouterr().err
    assert snapshot(folder) == before
    assert analyze(folder, tiny_dirs["llama"], "--overwrite") == 0
    assert "my own conclusion" not in findings.read_text()


def test_a_run_folder_with_foreign_files_is_refused_even_with_overwrite(folder, tiny_dirs, capsys):
    assert analyze(folder, tiny_dirs["llama"]) == 0
    (folder / "runs" / "alpha" / "notes.md").write_text("mine")
    before = snapshot(folder)
    assert analyze(folder, tiny_dirs["llama"], "--overwrite") == 2
    assert "notes.md" in capsys.readouterr().err
    assert snapshot(folder) == before


def test_no_isolated_and_visible_pair_is_one_error_line(tmp_path, tiny_dirs, capsys):
    (tmp_path / "only.toml").write_text('name = "only"\nmode = "isolated"\n' + SETTINGS)
    assert analyze(tmp_path, tiny_dirs["llama"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "isolated and a visible generation" in err and err.count("\n") == 1


def test_an_empty_folder_is_one_error_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "no experiment configs" in capsys.readouterr().err


def test_each_config_runs_on_its_own_model_loaded_once(tmp_path, monkeypatch):
    """Configs naming different models run on those models (not the first config's); each model is loaded once."""
    import tempo_lens.experiment.stream as model_module  # where the runner loads models
    from tempo_lens.experiment import Experiment, load_config
    from tempo_lens.app import analyze as pipeline

    for name, model in (("a", "model-x"), ("b", "model-y"), ("c", "model-x")):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\nmodel = "{model}"\n' + SETTINGS)
    configs = pipeline.find_configs(tmp_path)
    loaded, ran = [], {}
    monkeypatch.setattr(model_module, "load_model", lambda name, dtype=None, backend="bridge": loaded.append(name) or f"<{name}>")

    def fake_run(config, model, progress=None):
        ran[config.name] = (config.model, model)
        return Experiment(config=config.to_dict(), runs=[], model={})

    class Plan:
        def finished_run(self, name, config, backend):
            return None

        def save_run(self, experiment, name):
            return tmp_path / "runs" / name

    monkeypatch.setattr(pipeline, "run_experiment", fake_run)
    paths = pipeline.run_configs(configs, None, Plan(), progress=lambda _: None)
    assert ran == {"a": ("model-x", "<model-x>"), "b": ("model-y", "<model-y>"), "c": ("model-x", "<model-x>")}
    assert sorted(loaded) == ["model-x", "model-y"] and list(paths) == ["a", "b", "c"]
    loaded.clear()
    pipeline.run_configs(configs, "model-z", Plan(), progress=lambda _: None)  # --model: one model for all
    assert loaded == ["model-z"] and {m for m, _ in ran.values()} == {"model-z"}
    assert load_config(tmp_path / "b.toml").model == "model-y"


def test_the_report_reads_each_step_when_used_and_matches_a_whole_load(report, tmp_path, monkeypatch):
    """The report never loads a saved archive whole (memory holds the steps in use), and its metrics are the same."""
    import shutil

    from tempo_lens.io import saved_arrays
    from tempo_lens.experiment import loading, storage
    from tempo_lens.app import analyze as pipeline

    whole, when_used = tmp_path / "whole", tmp_path / "when_used"
    for out in (whole, when_used):
        shutil.copytree(report["folder"] / "runs", out / "runs")
    real = loading.load_experiment
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "load_experiment", lambda path, lazy=False: real(path))
        assert main(["analyze", str(whole)]) == 0

    def forbidden(*args, **kwargs):
        raise AssertionError("a saved archive was loaded whole")

    monkeypatch.setattr(storage, "read_arrays", forbidden)
    monkeypatch.setattr(saved_arrays, "RECENT_BYTES", 0)  # only the last array read is kept
    assert main(["analyze", str(when_used)]) == 0
    assert (when_used / "report" / "metrics.json").read_text() == (whole / "report" / "metrics.json").read_text()
