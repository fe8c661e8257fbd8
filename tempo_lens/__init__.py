"""tempo_lens: TEMPO (parallel tokens at shared positions) through TransformerLens hook points.

The names below are what a user needs; they are imported on first use, so ``import tempo_lens`` (and
the command line) start without loading torch until it is needed.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing: the command line starts sooner

__version__ = "0.2.0"

_EXPORTS = {
    "load_model": "models.loading",
    "GenerationConfig": "generation",
    "generate": "generation",
    "generate_batch": "generation",
    "GenerationResult": "generation",
    "load_result": "generation",
    "replay": "replaying",
    "load_experiment": "experiment",
    "save_experiment": "experiment",
    "run_experiment": "experiment",
    "load_config": "experiment",
    "TokenLayout": "layout",
    "CapturedRun": "capture",
    "CaptureSpec": "capture",
    "AttentionPruning": "pruning",
    "SimilarityPruning": "pruning",
    "tempo_hooks": "hooks",
    "tempo_position_hooks": "hooks",
    "rope_position_hooks": "hooks",
    "learned_position_hooks": "hooks",
    "isolation_mask_hooks": "hooks",
    "pruned_keys_mask_hooks": "hooks",
    "attention_block_hooks": "hooks",
    "attention_bias_hooks": "hooks",
    "fractional_positions": "hooks",
    "PatternRecorder": "hooks",
    "current_step": "hook_context",
    "StepContext": "hook_context",
    "TokenCache": "activation_cache",
}
_SUBMODULES = ("analysis", "figures", "tools", "views")  # research modules a user imports as tempo_lens.NAME
__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tempo_lens' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from typing import Any

    from .activation_cache import TokenCache
    from .capture import CapturedRun, CaptureSpec
    from .experiment import load_config, load_experiment, run_experiment, save_experiment
    from .generation import GenerationConfig, GenerationResult, generate, generate_batch, load_result
    from .hook_context import StepContext, current_step
    from .hooks import (
        PatternRecorder,
        attention_bias_hooks,
        attention_block_hooks,
        fractional_positions,
        isolation_mask_hooks,
        learned_position_hooks,
        pruned_keys_mask_hooks,
        rope_position_hooks,
        tempo_hooks,
        tempo_position_hooks,
    )
    from .layout import TokenLayout
    from .models.loading import load_model
    from .pruning import AttentionPruning, SimilarityPruning
    from .replaying import replay
