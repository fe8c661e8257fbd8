"""Experiments: a TOML config in (:mod:`.config`), runs made (:mod:`.runner`), a folder out (:mod:`.storage`).

Data flows one way: config → runner → storage → analysis → report.

May import: the layers below (io, errors, layout, models, backends, hooks, capture, generation);
never analysis, figures, report or app.
"""

from .config import CONTROLS, DTYPES, ExperimentConfig, config_from_dict, load_config, pruning_from_config
from .loading import load_experiment
from .runner import model_facts, package_versions, parse_shard, run_experiment, shard_folder
from .shards import check_shard_target, merge_experiments, shard_folders
from .storage import (
    ARRAYS,
    FORMAT_VERSION,
    METADATA,
    Experiment,
    check_can_write,
    recover_interrupted_overwrite,
    save_experiment,
)

__all__ = [
    "ARRAYS",
    "CONTROLS",
    "DTYPES",
    "Experiment",
    "ExperimentConfig",
    "FORMAT_VERSION",
    "METADATA",
    "check_can_write",
    "check_shard_target",
    "config_from_dict",
    "load_config",
    "load_experiment",
    "merge_experiments",
    "model_facts",
    "package_versions",
    "parse_shard",
    "pruning_from_config",
    "recover_interrupted_overwrite",
    "run_experiment",
    "save_experiment",
    "shard_folder",
    "shard_folders",
]
