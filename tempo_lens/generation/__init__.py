"""TEMPO generation: settings, the single and batched generators, and what they return.

- :mod:`.config`: :class:`GenerationConfig`, the one definition of the settings;
- :mod:`.steps`: prompt ids, EOS ids, sibling selection, the next distribution;
- :mod:`.row`: one prompt's generation as a state machine, shared by both generators;
- :mod:`.single` / :mod:`.batch`: one prompt per forward, or many through one padded forward;
- :mod:`.memory`: the memory estimate that refuses oversized settings and sizes batches;
- :mod:`.result`: :class:`GenerationResult` and its per-step records; :mod:`.saved`: one result on disk.

May import: io, errors, validation, layout, models, backends, hooks, capture and pruning; never experiment or
anything above.
"""

from .batch import generate_batch
from .config import NEXT_TOKEN_SOURCES, GenerationConfig, check_int, pruning_from_mapping
from .result import GenerationResult, StepRecord, load_result
from .single import forward_step, generate, new_cache
from .steps import eos_token_ids, next_distribution, prompt_token_ids, select_siblings

__all__ = [
    "GenerationConfig",
    "GenerationResult",
    "NEXT_TOKEN_SOURCES",
    "StepRecord",
    "check_int",
    "eos_token_ids",
    "forward_step",
    "generate",
    "generate_batch",
    "load_result",
    "new_cache",
    "next_distribution",
    "prompt_token_ids",
    "pruning_from_mapping",
    "select_siblings",
]
