"""Loading an experiment folder without the model: one saved experiment, or its ``shard-i-of-n`` folders merged."""

from __future__ import annotations

import os

from .shards import merge_experiments, shard_folders
from .storage import Experiment, _load_single, folder_path, recover_interrupted_overwrite


def load_experiment(directory: str | os.PathLike, *, lazy: bool = False) -> Experiment:
    """Reload an experiment without the model; a folder of ``shard-i-of-n`` folders is merged.

    The shards must add up to exactly one split of one config (see :func:`.shards.shard_folders`).
    ``lazy``: each captured step is read from disk when it is used (:class:`~tempo_lens.io.saved_arrays.StepsOnDisk`;
    only the last ones read are kept, up to a bound), so an experiment larger than memory can be analysed
    one run at a time; the checksums are verified now, and the archives held open until the experiment goes.
    """
    directory = folder_path(directory)
    recover_interrupted_overwrite(directory)
    folders = shard_folders(directory)
    if not folders:
        return _load_single(directory, lazy)
    parts = [_load_single(folder, lazy) for folder in folders]
    return merge_experiments(parts, path=directory)
