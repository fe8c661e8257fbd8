"""Shards: a merge accepts exactly one split of one config, and names what is wrong with anything else.

The table arranges real shard folders (written by ``run_experiment(shard=...)`` + ``save_experiment``)
into an ``out`` folder; each arrangement is loaded with ``load_experiment`` and merged with
``tempo-lens merge``. A refusal changes no file; an accepted arrangement merges to the unsharded run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from tempo_lens.io.atomic import MARKER

from tempo_lens.errors import ExperimentFileError, InvalidInputError
from tempo_lens.experiment import config_from_dict, load_experiment, merge_experiments, run_experiment, save_experiment
from tests.reliability.conftest import assert_clean_refusal, dead_owner_tag, run_cli, snapshot

CONFIG = {"name": "sharded", "prompts": ["t1 t17 t42", "t1 t9", "t1 t50 t60"], "threshold": 1e-6, "max_parallel": 2,
          "max_steps": 2, "modes": ["isolated", "visible"], "batch_size": 1}


@pytest.fixture(scope="module")
def made(tiny_bridges, tmp_path_factory) -> dict[str, Path]:
    """Saved experiments: every shard of a 2-way, 3-way and 4-way split, plus shards of another config and model."""
    root = tmp_path_factory.mktemp("shard_sources")
    config = config_from_dict(CONFIG)
    other = config_from_dict({**CONFIG, "threshold": 0.5})
    llama, qwen = tiny_bridges["llama"], tiny_bridges["qwen2"]
    out = {"whole": save_experiment(run_experiment(config, llama), root / "whole")}
    for n in (2, 3, 4):
        for i in range(n):
            out[f"{i}/{n}"] = save_experiment(run_experiment(config, llama, shard=(i, n)), root / f"s{i}of{n}")
    out["other_config 1/2"] = save_experiment(run_experiment(other, llama, shard=(1, 2)), root / "other_config")
    out["other_model 1/2"] = save_experiment(run_experiment(config, qwen, shard=(1, 2)), root / "other_model")
    return out


def _place(made: dict[str, Path], out: Path, placement: dict[str, str]) -> None:
    out.mkdir()
    for name, source in placement.items():
        shutil.copytree(made[source], out / name)


def _backup_of_shard_1(out: Path) -> None:
    """An overwrite of shard-1-of-2 killed between its two renames (a writer that has ended)."""
    backup = out / f".shard-1-of-2.old-{dead_owner_tag()}-1700000000000"
    (out / "shard-1-of-2" / MARKER).write_text(backup.name)  # as the swap marks the folder it moves aside
    (out / "shard-1-of-2").rename(backup)


TWO = {"shard-0-of-2": "0/2", "shard-1-of-2": "1/2"}
THREE = {f"shard-{i}-of-3": f"{i}/3" for i in range(3)}

REFUSED = {
    "mixed_split_sizes": ({"shard-0-of-2": "0/2", "shard-1-of-3": "1/3", "shard-2-of-3": "2/3"}, None, ["splits of different sizes", "shard-0-of-2 is 0/2", "shard-1-of-3 is 1/3"]),
    "two_whole_splits": ({**TWO, **THREE}, None, ["splits of different sizes"]),
    "missing_shard": ({"shard-0-of-3": "0/3", "shard-2-of-3": "2/3"}, None, ["expected ['0/3', '1/3', '2/3']", "run the missing shards"]),
    "swapped_folders": ({"shard-0-of-2": "1/2", "shard-1-of-2": "0/2"}, None, ["holds shard 1/2", "not the shard its name says"]),
    "copied_into_wrong_name": ({"shard-0-of-2": "0/2", "shard-1-of-2": "0/2"}, None, ["shard-1-of-2", "holds shard 0/2"]),
    "zero_padded_name": ({"shard-00-of-2": "0/2", "shard-1-of-2": "1/2"}, None, ["shard-00-of-2", "renamed or copied"]),
    "other_config": ({"shard-0-of-2": "0/2", "shard-1-of-2": "other_config 1/2"}, None, ["different configs", "shard-1-of-2", "threshold"]),
    "other_model": ({"shard-0-of-2": "0/2", "shard-1-of-2": "other_model 1/2"}, None, ["another model", "shard-1-of-2"]),
    "whole_experiment_as_a_shard": ({"shard-0-of-2": "0/2", "shard-1-of-2": "whole"}, None, ["shard-1-of-2 is not a shard"]),
    "stray_folder": ({**TWO, "old-run": "whole"}, None, ["'old-run' beside its shard folders"]),
    "stray_copy_of_a_shard": ({**TWO, "shard-0-of-2-copy": "0/2"}, None, ["'shard-0-of-2-copy'"]),
    "stray_file_named_like_a_shard": (TWO, lambda out: (out / "shard-2-of-2").write_text("x"), ["'shard-2-of-2'"]),
    "merged_beside_shards": (TWO, lambda out: shutil.copy(out / "shard-0-of-2" / "metadata.json", out / "metadata.json"), ["both a merged experiment"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_arrangement_is_named_and_left_as_is(case, made, tmp_path):
    placement, extra, fragments = REFUSED[case]
    out = tmp_path / "out"
    _place(made, out, placement)
    if extra:
        extra(out)
    before = snapshot(tmp_path)
    with pytest.raises(ExperimentFileError) as info:
        load_experiment(out)
    for fragment in fragments:
        assert fragment.lower() in str(info.value).lower(), str(info.value)
    rc, _, err = run_cli(["merge", str(out)])
    assert_clean_refusal(rc, err, *fragments)
    rc, _, err = run_cli(["merge", str(out), "--out", str(tmp_path / "merged")])
    assert_clean_refusal(rc, err, *fragments)
    assert snapshot(tmp_path) == before and not (tmp_path / "merged").exists()


ACCEPTED = {
    "two_way": (TWO, None),
    "three_way": (THREE, None),
    "four_way_with_an_empty_shard": ({f"shard-{i}-of-4": f"{i}/4" for i in range(4)}, None),
    "hidden_temporary_folder_of_a_running_write": (TWO, lambda out: (out / ".shard-1-of-2.tmp-running").mkdir()),
    "interrupted_overwrite_of_a_shard": (TWO, _backup_of_shard_1),
    "unrelated_plain_file": (TWO, lambda out: (out / "slurm-123.out").write_text("log")),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_one_complete_split_merges_to_the_unsharded_run(case, made, tmp_path):
    placement, extra = ACCEPTED[case]
    out = tmp_path / "out"
    _place(made, out, placement)
    if extra:
        extra(out)
    merged, whole = load_experiment(out), load_experiment(made["whole"])
    assert [(r.name, r.layout.to_dict(), r.token_strings) for r in merged.runs] == \
        [(r.name, r.layout.to_dict(), r.token_strings) for r in whole.runs]
    assert merged.config == whole.config and merged.shard is None
    rc, _, err = run_cli(["merge", str(out), "--out", str(tmp_path / "merged")])
    assert rc == 0, err
    assert [r.name for r in load_experiment(tmp_path / "merged").runs] == [r.name for r in whole.runs]


# ---- merge_experiments given experiments in memory ----------------------------------------------

def _edited(experiment, **changes):
    return dataclasses.replace(experiment, **changes)


MEMORY = {
    "duplicate": (lambda e: [e["0/2"], e["0/2"], e["1/2"]], "present more than once"),
    "not_a_shard": (lambda e: [e["whole"], e["0/2"]], "is not a shard"),
    "field_garbled": (lambda e: [_edited(e["0/2"], shard="0-2"), e["1/2"]], "is not a shard"),
    "field_impossible": (lambda e: [_edited(e["0/2"], shard="5/2"), e["1/2"]], "impossible shard field"),
    "too_many_shards": (lambda e: [_edited(e["0/2"], shard="0/99999999")], "impossible shard field"),
    "prompt_in_the_wrong_shard": (lambda e: [_edited(e["0/2"], shard="1/2", path=None), _edited(e["1/2"], shard="0/2", path=None)],
                                  "belongs to another shard"),
    "runs_missing": (lambda e: [_edited(e["0/2"], runs=e["0/2"].runs[:1]), e["1/2"]], "every (prompt, mode)"),
}


@pytest.mark.parametrize("case", sorted(MEMORY))
def test_merge_experiments_refuses_what_is_not_one_split(case, made, tmp_path):
    pick, fragment = MEMORY[case]
    loaded = {key: load_experiment(path) for key, path in made.items() if key in ("whole", "0/2", "1/2")}
    with pytest.raises(ExperimentFileError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        merge_experiments(pick(loaded))


# ---- run --shard refuses an --out that could never merge, before the model loads ---------------

RUN_TARGETS = {
    "another_split_there": ({"shard-0-of-3": "0/3"}, ["another split", "shard-0-of-3"]),
    "a_merged_experiment_there": ({}, ["holds a merged experiment"]),
    "a_stray_folder_there": ({"shard-1-of-2": "1/2", "notes": "whole"}, ["'notes' beside its shard folders"]),
}


@pytest.mark.parametrize("case", sorted(RUN_TARGETS))
def test_run_shard_into_an_out_that_cannot_merge(case, made, tmp_path, no_model_load):
    placement, fragments = RUN_TARGETS[case]
    out = tmp_path / "out"
    if case == "a_merged_experiment_there":
        shutil.copytree(made["whole"], out)
    else:
        _place(made, out, placement)
    config = tmp_path / "exp.toml"
    config.write_text('prompts = ["t1 t5", "t1 t6"]\nmax_steps = 1\n')
    before = snapshot(tmp_path)
    rc, _, err = run_cli(["run", str(config), "--out", str(out), "--shard", "0/2", "--overwrite"])
    assert_clean_refusal(rc, err, *fragments)
    assert snapshot(tmp_path) == before


def test_merge_given_a_bad_list_is_an_input_error():
    with pytest.raises(InvalidInputError):
        merge_experiments("shard-0-of-2")
