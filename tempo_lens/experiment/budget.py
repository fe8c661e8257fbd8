"""What an experiment will cost, stated before it runs, and the bound past which it must be asked for.

An experiment holds every run's captured attention in memory until it is saved. Before the model
loads, :func:`check_run_count` refuses a config of more than :data:`MAX_RUNS` runs (prompts × modes ×
(1 + controls)) unless ``allow_large = true`` (``--allow-large``), naming the count and the way to
split it (``--shard i/n``). Once the model is loaded, :func:`check_memory` estimates the attention
arrays from the model's shape (an upper bound: every captured step at ``max_parallel`` siblings) and
refuses, again unless asked, an experiment whose arrays would not fit in half the free memory.
:func:`estimate_seconds` bounds the time from one timed forward, stated before generation starts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .config import ExperimentConfig

MAX_RUNS = 2000  # a few hours on the embedded model on a laptop CPU: past this, ask for it explicitly
FLOAT_BYTES = 4


def run_count(config: ExperimentConfig, n_prompts: int | None = None) -> int:
    """Runs the experiment makes: each prompt in each mode, plus one replay per control."""
    prompts = len(config.prompts) if n_prompts is None else n_prompts
    return prompts * len(config.modes) * (1 + len(config.controls))


def _ask(what: str) -> str:
    return (
        f"{what}; split it with `tempo-lens run CONFIG --shard i/n` (n processes or sessions, merged with "
        "`tempo-lens merge`), or pass --allow-large (allow_large = true in the config) to run it anyway"
    )


def check_run_count(config: ExperimentConfig, allow_large: bool = False, n_prompts: int | None = None) -> None:
    """Refuse more than :data:`MAX_RUNS` runs before any model loads, unless asked."""
    runs = run_count(config, n_prompts)
    if runs > MAX_RUNS and not (allow_large or config.allow_large):
        prompts = len(config.prompts) if n_prompts is None else n_prompts
        raise ConfigError(
            _ask(
                f"{config.name}: {runs:,} runs ({prompts:,} prompts x {len(config.modes)} mode(s) x "
                f"{1 + len(config.controls)} with controls) is more than the {MAX_RUNS:,} runs an experiment may hold "
                f"without asking; at max_steps {config.generation.max_steps} that is up to "
                f"{runs * config.generation.max_steps * config.generation.max_parallel:,} generated tokens, all kept in memory until saved"
            )
        )


def attention_bytes(config: ExperimentConfig, n_layers: int, n_heads: int, longest_prompt: int, n_prompts: int) -> int:
    """Upper estimate of the captured attention an experiment holds: every step at ``max_parallel`` siblings.

    Step ``s`` holds ``width`` queries over ``longest_prompt + (s + 1) * width`` keys; over all steps that sum
    has a closed form, so the estimate costs the same for any ``max_steps``.
    """
    settings = config.generation
    capture = settings.capture
    layers = len(capture.layers_for(n_layers)) if capture is not None else n_layers
    width = settings.max_parallel
    if capture is not None and capture.steps is not None:
        steps = [s for s in capture.steps if s < settings.max_steps]
        n_steps, step_sum = len(steps), sum(steps)
    else:
        n_steps = settings.max_steps
        step_sum = n_steps * (n_steps - 1) // 2  # 0 + 1 + ... + (max_steps - 1)
    keys = n_steps * longest_prompt + (step_sum + n_steps) * width  # sum over steps of prompt + (s + 1) * width
    per_run = layers * n_heads * width * keys * FLOAT_BYTES
    return per_run * run_count(config, n_prompts)


def estimate_seconds(model: Any, config: ExperimentConfig, n_prompts: int) -> tuple[float, float]:
    """(an upper estimate of the experiment's generation time in seconds, the probe forward's seconds).

    One forward of ``max_parallel`` tokens is timed on the loaded model: a TEMPO step costs at most about
    that, so prompts x modes x ``max_steps`` of them bound the generation (batching shares forwards, so
    the real time is usually lower; the control replays are one forward each).
    """
    import torch  # deferred: torch

    from ..backends import backend_for  # deferred: torch (through tempo_lens.backends)

    backend = backend_for(model)
    tokens = torch.ones(1, max(2, config.generation.max_parallel), dtype=torch.long, device=backend.device)
    with torch.no_grad():
        backend.forward(tokens)  # warm
        started = time.perf_counter()
        backend.forward(tokens)
        probe = time.perf_counter() - started
    steps = n_prompts * len(config.modes) * (config.generation.max_steps + 1)
    replays = n_prompts * len(config.modes) * len(config.controls)
    return probe * (steps + replays), probe


def check_memory(need: int, free: int, config: ExperimentConfig, allow_large: bool = False) -> None:
    """Refuse, unless asked, an experiment whose estimated attention arrays exceed half the free memory."""
    if need > free // 2 and not (allow_large or config.allow_large):
        raise ConfigError(
            _ask(
                f"{config.name}: its captured attention may need up to {need / 2**30:.1f} GiB (every step at max_parallel "
                f"{config.generation.max_parallel}) and {free / 2**30:.1f} GiB is free; lower max_parallel or max_steps, "
                "capture fewer layers or steps ([capture])"
            )
        )
