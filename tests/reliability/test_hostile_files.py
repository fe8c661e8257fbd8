"""Hostile or damaged saved files (issue 21, classes 6-9): memory bombs, deep nesting, structurally wrong
files whose checksums were recomputed to match, and pickled model weights.

Every case is refused with one ExperimentFileError (or one ``error:`` line) naming the file and, for a
wrong field, the field; nothing is read into memory beyond what the metadata, checked against the
machine, allows; nothing is unpickled; the folder is left as it was.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tempo_lens.io import saved_arrays
from tempo_lens.io.checksums import sha256_of
from tempo_lens.errors import ExperimentFileError
from tempo_lens.experiment import (
    config_from_dict,
    load_config,
    load_experiment,
    run_experiment,
    save_experiment,
)
from tempo_lens.experiment.storage import _metadata_digest
from tempo_lens.generation.result import load_result
from tempo_lens.io.records import MAX_RECORD_BYTES
from tempo_lens.app.outputs import OutputPlan
from tempo_lens.analysis.metrics.schema import read_metrics
from tests.reliability.conftest import assert_clean_refusal, run_cli, snapshot

DEEP = "[" * 200_000 + "]" * 200_000


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory) -> Path:
    config = config_from_dict({"name": "h", "prompts": ["t1 t17 t42", "t1 t9"], "threshold": 1e-6, "max_parallel": 3,
                               "max_steps": 2, "controls": ["unique_positions"]})
    return save_experiment(run_experiment(config, tiny_llama), tmp_path_factory.mktemp("hostile") / "exp")


@pytest.fixture(scope="module")
def saved_result(tiny_llama, tmp_path_factory) -> Path:
    from tempo_lens import generate

    result = generate(tiny_llama, "t1 t17 t42", threshold=1e-6, max_parallel=3, max_steps=2, capture=True)
    return result.save(tmp_path_factory.mktemp("hostile_result") / "r")


def _copy(source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    return folder


def _resign(folder: Path, change) -> None:
    """Edit metadata.json and recompute both of its checksums, as a careful forger would."""
    path = folder / "metadata.json"
    data = json.loads(path.read_text())
    change(data)
    data["arrays_sha256"] = sha256_of(folder / "attention.npz")
    data["metadata_sha256"] = _metadata_digest(data)
    path.write_text(json.dumps(data))


def _replace_arrays(folder: Path, write) -> None:
    write(folder / "attention.npz")
    _resign(folder, lambda d: None)


def _refused(folder: Path, *fragments: str, lazy: bool = False) -> str:
    """The load is refused naming ``fragments`` and nothing changes on disk; ``lazy``: the load, or a read of any step."""
    before = snapshot(folder.parent)
    with pytest.raises(ExperimentFileError) as info:
        experiment = load_experiment(folder, lazy=lazy)
        for run in experiment.runs:
            for step in run.attention:
                run.attention[step]
    message = str(info.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    assert snapshot(folder.parent) == before
    return message


# ---- class 8: structurally wrong, re-signed metadata -------------------------------------------------

def _set(*path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return change


RESIGNED = {
    "meta_as_list": (_set("runs", 0, "meta", value=[]), ["runs[0].meta", "expected an object"]),
    "versions_as_list": (_set("versions", value=["torch"]), ["versions", "expected an object"]),
    "prompts_a_number": (_set("config", "prompts", value=5), ["config.prompts", "expected a list"]),
    "model_as_string": (_set("model", value="smollm2-135m"), ["metadata.model", "expected an object"]),
    "threshold_as_string": (_set("config", "threshold", value="0.1"), ["config.threshold"]),
    "run_threshold_as_string": (_set("runs", 0, "meta", "threshold", value="0.1"), ["runs[0].meta.threshold"]),
    "duplicate_layers": (_set("runs", 0, "layers", value=lambda v: [v[0], v[0]]), ["runs[0].layers", "twice"]),
    "layer_outside_the_model": (_set("runs", 0, "layers", value=lambda v: [*v[:-1], 99]), ["runs[0].layers", "99"]),
    "n_layers_as_string": (_set("model", "n_layers", value="2"), ["model.n_layers", "integer"]),
    "run_n_layers_as_string": (_set("runs", 0, "meta", "n_layers", value="2"), ["runs[0].meta.n_layers"]),
    "mode_unknown": (_set("runs", 0, "mode", value="sideways"), ["runs[0].mode", "isolated"]),
    "steps_repeated": (_set("runs", 0, "steps", value=lambda v: v + v[:1]), ["runs[0].steps", "twice"]),
    "token_id_as_text": (_set("runs", 0, "layout", "token_ids", value=lambda v: [str(v[0]), *v[1:]]),
                         ["runs[0].layout.token_ids[0]", "integer"]),
    "token_text_a_number": (_set("runs", 0, "token_strings", value=lambda v: [7, *v[1:]]), ["runs[0].token_strings[0]"]),
    "config_modes_wrong": (_set("config", "modes", value="isolated"), ["config.modes"]),
    "shard_a_number": (_set("shard", value=3), ["shard"]),
    "kv_heads_as_float": (_set("model", "n_kv_heads", value=2.5), ["model.n_kv_heads"]),
    "variant_unknown": (_set("runs", 1, "meta", "variant", value="evil"), ["runs[1].meta.variant"]),
}


@pytest.mark.parametrize("case", sorted(RESIGNED))
def test_structurally_wrong_resigned_metadata_is_refused_naming_file_and_field(case, saved, tmp_path):
    change, fragments = RESIGNED[case]
    folder = _copy(saved, tmp_path)
    _resign(folder, change)
    _refused(folder, "metadata.json", *fragments)


def _npy_as_npz(path: Path) -> None:
    np.save(open(path, "wb"), np.zeros((2, 2), dtype=np.float32))


def _pickled_npz(path: Path) -> None:
    np.savez(path, r0_s0=np.array([{"a": 1}], dtype=object))


def _wrong_dtype(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k].astype(np.float64) for k in npz.files}
    np.savez_compressed(path, **arrays)


def _extra_member(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez_compressed(path, **arrays, smuggled=np.zeros(3, dtype=np.float32))


ARRAY_CASES = {
    "npy_saved_as_npz": (_npy_as_npz, ["not an .npz archive"]),
    "pickled_object_array": (_pickled_npz, ["does not hold the arrays"]),
    "float64_arrays": (_wrong_dtype, ["float64", "float32"]),
    "extra_member": (_extra_member, ["smuggled"]),
}


@pytest.mark.parametrize("lazy", [False, True], ids=["loaded", "read-when-used"])
@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_arrays_that_are_not_what_the_metadata_describes_are_refused(case, lazy, saved, tmp_path):
    write, fragments = ARRAY_CASES[case]
    folder = _copy(saved, tmp_path)
    _replace_arrays(folder, write)
    _refused(folder, "attention.npz", *fragments, lazy=lazy)


# ---- class 6: memory bombs ---------------------------------------------------------------------------

def _inflated(path: Path) -> None:
    """Every array padded with zeros to a huge key count: a few MB compressed, gigabytes decompressed."""
    with np.load(path) as npz:
        shapes = {k: npz[k].shape for k in npz.files}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, shape in shapes.items():
            big = (*shape[:-1], shape[-1] * 4000)
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": big})
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                member.write(buffer.getvalue())
                chunk = bytes(2**20)
                left = int(np.prod(big)) * 4
                while left > 0:
                    member.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)


@pytest.mark.parametrize("lazy", [False, True], ids=["loaded", "read-when-used"])
def test_an_npz_declaring_huge_arrays_is_refused_before_decompressing(lazy, saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path)
    _replace_arrays(folder, _inflated)
    assert (folder / "attention.npz").stat().st_size < 8 * 2**20
    allocated = []
    real_empty = np.empty
    monkeypatch.setattr(saved_arrays.np, "empty", lambda *a, **k: allocated.append(a) or real_empty(*a, **k))
    _refused(folder, "attention.npz", "shape", lazy=lazy)
    assert allocated == [], "an array was allocated before the declared shape was checked"


@pytest.mark.parametrize("lazy", [False, True], ids=["loaded", "read-when-used"])
def test_metadata_describing_more_arrays_than_memory_holds_is_refused(lazy, saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path)
    monkeypatch.setattr(saved_arrays, "_available_bytes", lambda: 1000)
    _refused(folder, "free memory", lazy=lazy)


def _sparse(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


@pytest.mark.parametrize("which", ["metadata", "result", "metrics", "manifest"])
def test_a_huge_sparse_json_file_is_refused_before_it_is_read(which, saved, saved_result, tmp_path, monkeypatch):
    import builtins

    size = MAX_RECORD_BYTES + 1
    reads = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    if which == "metadata":
        folder = _copy(saved, tmp_path)
        _sparse(folder / "metadata.json", size)
        _refused(folder, "metadata.json", "MiB")
    elif which == "result":
        folder = _copy(saved_result, tmp_path)
        _sparse(folder / "result.json", size)
        with pytest.raises(ExperimentFileError, match="MiB"):
            load_result(folder)
    elif which == "metrics":
        _sparse(tmp_path / "metrics.json", size)
        with pytest.raises(ExperimentFileError, match="MiB"):
            read_metrics(tmp_path / "metrics.json")
    else:
        _sparse(tmp_path / ".tempo-lens-analyze.json", size)
        with pytest.raises(ExperimentFileError, match="MiB"):
            OutputPlan(tmp_path)


# ---- class 7: deep nesting ---------------------------------------------------------------------------

def _deep(kind: str, saved: Path, saved_result: Path, tmp_path: Path):
    if kind == "metadata":
        folder = _copy(saved, tmp_path)
        (folder / "metadata.json").write_text(DEEP)
        return lambda: load_experiment(folder)
    if kind == "metadata_inside_a_field":
        folder = _copy(saved, tmp_path)
        _resign(folder, _set("runs", 0, "meta", "extra", value=json.loads("[" * 100 + "]" * 100)))
        return lambda: load_experiment(folder)
    if kind == "result":
        folder = _copy(saved_result, tmp_path)
        (folder / "result.json").write_text(DEEP)
        return lambda: load_result(folder)
    if kind == "metrics":
        (tmp_path / "metrics.json").write_text(DEEP)
        return lambda: read_metrics(tmp_path / "metrics.json")
    (tmp_path / ".tempo-lens-analyze.json").write_text(DEEP)
    return lambda: OutputPlan(tmp_path)


@pytest.mark.parametrize("kind", ["metadata", "metadata_inside_a_field", "result", "metrics", "manifest"])
def test_deep_nesting_is_one_clear_refusal(kind, saved, saved_result, tmp_path):
    load = _deep(kind, saved, saved_result, tmp_path)
    with pytest.raises(ExperimentFileError, match="nests deeper"):
        load()


@pytest.mark.parametrize("value", ["[" * 200_000 + "]" * 200_000, "[" * 900 + "1" + "]" * 900])
def test_deeply_nested_config_is_one_error_line(value, tmp_path):
    config = tmp_path / "deep.toml"
    config.write_text(f'prompt = "t1 t2"\ncapture = {{ layers = {value} }}\n')
    from tempo_lens.errors import ConfigError

    with pytest.raises(ConfigError, match="nest deeper"):
        load_config(config)
    rc, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "out")])
    assert_clean_refusal(rc, err, "nest deeper")


def test_analyze_of_a_hostile_saved_folder_is_one_error_line(saved, tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    exp = _copy(saved, folder)
    _resign(exp, _set("model", value="smollm2-135m"))
    before = snapshot(folder)
    rc, _, err = run_cli(["analyze", str(folder)])
    assert_clean_refusal(rc, err, "metadata.json", "model")
    assert snapshot(folder) == before


# ---- class 9: pickled model weights ------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pth"])
def test_a_model_folder_with_pickled_weights_is_refused_in_one_line(name, short_ctx_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(short_ctx_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with open(folder / name, "wb") as handle:
        pickle.dump({"w": _Evil()}, handle)
    rc, out, err = run_cli(["generate", "t1 t2", "--model", str(folder), "--max-steps", "1"])
    message = assert_clean_refusal(rc, err, "pickled", name, "safetensors")
    assert "weights_only" not in err and "unpickled!" not in out + err
    assert len(err.strip().splitlines()) == 1, err
    assert "unpickl" not in message.lower().replace("loading a pickle can run code", "")
