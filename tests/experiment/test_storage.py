"""Experiment configs and folders: round trip, atomic writes, refusals, shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tempo_lens.errors import ConfigError, ExperimentFileError
from tempo_lens.pruning import AttentionPruning
from tempo_lens.experiment import (
    FORMAT_VERSION, config_from_dict, load_config, load_experiment, run_experiment, save_experiment, shard_folder,
)

TINY = dict(prompts=["t1 t17 t42 t5", "t1 t9 t33", "t1 t50 t60 t70"], threshold=1e-6, max_parallel=3, max_steps=3)


@pytest.fixture(scope="module")
def tiny_experiment(tiny_llama):
    config = config_from_dict({**TINY, "name": "tiny", "modes": ["isolated", "visible"], "controls": ["unique_positions", "toggled_mask"]})
    return run_experiment(config, tiny_llama)


def test_round_trip_is_identical(tiny_experiment, tmp_path):
    path = save_experiment(tiny_experiment, tmp_path / "exp")
    loaded = load_experiment(path)
    assert [r.name for r in loaded.runs] == [r.name for r in tiny_experiment.runs]
    for a, b in zip(tiny_experiment.runs, loaded.runs):
        assert a.layout.to_dict() == b.layout.to_dict()
        assert a.token_strings == b.token_strings and a.layers == b.layers and a.mode == b.mode
        assert sorted(a.attention) == sorted(b.attention)
        for step in a.attention:
            assert np.array_equal(a.attention[step], b.attention[step])
    assert loaded.model["n_layers"] == 3 and loaded.config["name"] == "tiny"


def test_a_lazy_load_reads_each_step_when_used_from_the_file_it_checked(tiny_experiment, tiny_llama, tmp_path, monkeypatch):
    """``lazy=True``: the same arrays, none read at load, each read on use; a damaged archive is refused at load;
    an overwrite after the load does not change what is read (the checked file is held open)."""
    from tempo_lens.io import saved_arrays

    path = save_experiment(tiny_experiment, tmp_path / "exp")
    reads = []
    real = saved_arrays._read_member
    monkeypatch.setattr(saved_arrays, "_read_member", lambda *a: reads.append(a[3]) or real(*a))
    monkeypatch.setattr(saved_arrays, "RECENT_BYTES", 0)  # keep only the last array read
    lazy = load_experiment(path, lazy=True)
    assert reads == []
    other = config_from_dict({**TINY, "name": "other", "prompts": ["t1 t2 t3"]})
    save_experiment(run_experiment(other, tiny_llama), path, overwrite=True)
    for a, b in zip(tiny_experiment.runs, lazy.runs):
        assert sorted(a.attention) == sorted(b.attention) and len(a.attention) == len(b.attention)
        for step in a.attention:
            assert np.array_equal(a.attention[step], b.attention[step])
    assert len(reads) == sum(len(r.attention) for r in tiny_experiment.runs)
    arrays = path / "attention.npz"
    arrays.write_bytes(arrays.read_bytes()[:-10])
    with pytest.raises(ExperimentFileError, match="checksum"):
        load_experiment(path, lazy=True)


def test_controls_are_recorded_as_variants(tiny_experiment):
    variants = {r.meta["variant"] for r in tiny_experiment.runs}
    assert variants == {"generated", "unique_positions", "toggled_mask"}
    assert len(tiny_experiment.generated()) == 6


def test_existing_folder_is_refused_without_overwrite(tiny_experiment, tmp_path):
    path = save_experiment(tiny_experiment, tmp_path / "exp")
    before = (path / "metadata.json").read_bytes()
    with pytest.raises(ExperimentFileError, match="already exists"):
        save_experiment(tiny_experiment, path)
    assert (path / "metadata.json").read_bytes() == before
    save_experiment(tiny_experiment, path, overwrite=True)
    assert load_experiment(path).runs


def test_a_crash_mid_write_leaves_the_previous_result(tiny_experiment, tmp_path, monkeypatch):
    path = save_experiment(tiny_experiment, tmp_path / "exp")
    import tempo_lens.experiment.storage as module

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(module.json, "dump", boom)
    with pytest.raises(RuntimeError):
        save_experiment(tiny_experiment, path, overwrite=True)
    monkeypatch.undo()
    assert len(load_experiment(path).runs) == len(tiny_experiment.runs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.parametrize("damage", ["truncate", "edit_arrays", "newer", "older", "no_metadata", "no_arrays", "bad_json", "shape", "token_id_edited"])
def test_damaged_folders_are_refused(tiny_experiment, tmp_path, damage):
    path = save_experiment(tiny_experiment, tmp_path / "exp")
    meta_path, arrays = path / "metadata.json", path / "attention.npz"
    meta = json.loads(meta_path.read_text())
    if damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[:100])
    elif damage == "edit_arrays":
        data = bytearray(arrays.read_bytes()); data[len(data) // 2] ^= 0xFF; arrays.write_bytes(bytes(data))
    elif damage in ("newer", "older"):
        meta["format_version"] = FORMAT_VERSION + (1 if damage == "newer" else -1)
        meta_path.write_text(json.dumps(meta))
    elif damage == "no_metadata":
        meta_path.unlink()
    elif damage == "no_arrays":
        arrays.unlink()
    elif damage == "bad_json":
        meta_path.write_text(meta_path.read_text()[:50])
    elif damage == "shape":
        meta["runs"][0]["layout"]["token_ids"].append(5)
        for key in ("steps", "logical_positions", "probs", "pruned_at", "prune_scores"):
            meta["runs"][0]["layout"][key].append(meta["runs"][0]["layout"][key][-1])
        meta_path.write_text(json.dumps(meta))
    elif damage == "token_id_edited":  # a structurally valid edit: only the checksum can tell
        meta["runs"][0]["layout"]["token_ids"][0] += 1
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(ExperimentFileError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "re-run" in message.lower()
    if damage in ("newer", "older"):
        assert str(FORMAT_VERSION) in message and str(meta["format_version"]) in message and damage in message


def test_shards_merge_to_the_whole(tiny_llama, tmp_path):
    config = config_from_dict({**TINY, "name": "sharded", "batch_size": 1})  # same rows per forward in every split
    whole = run_experiment(config, tiny_llama)
    for i in range(2):
        save_experiment(run_experiment(config, tiny_llama, shard=(i, 2)), shard_folder(tmp_path / "out", (i, 2)))
    merged = load_experiment(tmp_path / "out")
    assert [r.layout.to_dict() for r in merged.runs] == [r.layout.to_dict() for r in whole.runs]
    (tmp_path / "out" / "shard-1-of-2" / "metadata.json").rename(tmp_path / "gone.json")
    with pytest.raises(ExperimentFileError):
        load_experiment(tmp_path / "out")


def test_config_file_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('prompt = "The cat sat on the"\nthreshold = 0.1\nmode = "visible"\n[pruning]\nattention_threshold = 0.5\n')
    config = load_config(good)
    assert config.name == "good" and config.modes == ["visible"]
    assert config.generation.pruning == AttentionPruning(attention_threshold=0.5)
    cases = {
        'promt = "x"\n': "did you mean 'prompt'",
        'threshold = 0.1\n': "missing key 'prompt'",
        'prompt = "x"\nthreshold = 2\n': "threshold",
        'prompt = "x"\nthreshold = "high"\n': "must be a number",
        'prompt = "x"\nmode = "both"\n': "mode",
        'prompt = "x"\n[pruning]\nattention_treshold = 1\n': "did you mean 'attention_threshold'",
        'prompt = "x"\n[capture]\nlayers = "some"\n': "capture.layers",
        'prompt = "x\n': "not valid TOML",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_folders_merely_named_like_temporaries_are_never_removed(tiny_experiment, tmp_path):
    """Only folders this program provably made (writer in the name and a marker inside) are removed."""
    import os
    import time

    stale, fresh = tmp_path / ".exp.tmp-old", tmp_path / ".exp.tmp-new"
    stale.mkdir(), fresh.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    save_experiment(tiny_experiment, tmp_path / "exp")
    assert stale.exists() and fresh.exists()


def test_every_run_records_the_speed_paths_and_kernel_plan_it_ran(tiny_experiment, tiny_llama, tmp_path):
    """The saved metadata says which speed paths and linear kernels produced each run; a file written before
    the field existed still loads."""
    from tempo_lens.backends import backend_for
    from tempo_lens.experiment.storage import _metadata_digest
    from tempo_lens.io.records import clean

    expected = clean(backend_for(tiny_llama).speed_record())
    assert "fast norms" in expected["paths"] and isinstance(expected["kernel_plan"], str)  # the cached measurement's key
    assert set(expected) == {"paths", "packed_from_rows", "one_row", "kernel_plan", "plan_measured"}
    path = save_experiment(tiny_experiment, tmp_path / "exp")
    saved = json.loads((path / "metadata.json").read_text())
    assert all(run["meta"]["speed"] == expected for run in saved["runs"])
    assert all(r.meta["speed"] == expected for r in load_experiment(path).runs)
    for run in saved["runs"]:
        del run["meta"]["speed"]
    saved["metadata_sha256"] = _metadata_digest(saved)
    (path / "metadata.json").write_text(json.dumps(saved))
    assert all("speed" not in r.meta for r in load_experiment(path).runs)
