"""What a TEMPO generation returns: the layout plus what is needed to read it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from torch import Tensor

from ..activation_cache import NamesFilter, TokenCache, replay_cache
from ..capture import CapturedAttention
from ..io.records import clean
from ..layout import TokenLayout
from ..pruning import PruneEvent
from ..text import bracketed
from .config import GenerationConfig
from .saved import read_result, save_result, token_table


@dataclass
class StepRecord:
    """One step as a reader wants it (derived from the layout, never stored separately)."""

    step: int
    logical_position: int
    token_ids: list[int]
    tokens: list[str]
    probs: list[float]
    physical_range: tuple[int, int]
    pruned: list[bool]
    pruned_at_step: list[int | None]
    prune_score: list[float | None]
    threshold: float

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "logical_position": self.logical_position,
            "token_ids": self.token_ids,
            "tokens": self.tokens,
            "probs": self.probs,
            "pruned": self.pruned,
            "physical_range": list(self.physical_range),
            "pruned_at_step": self.pruned_at_step,
            "prune_score": self.prune_score,
            "threshold": self.threshold,
        }


def _config_setting(name: str) -> property:
    """A read-only attribute that reads ``config.<name>``."""
    return property(lambda self: getattr(self.config, name), doc=f"``config.{name}``")


@dataclass
class GenerationResult:
    """The layout of a TEMPO generation and what is needed to read it.

    ``name`` identifies the run to the tools that group by run (``sae_latents``' run column,
    ``compare_sae_latents``): :func:`~tempo_lens.generation.generate` names its result ``"run"``,
    :func:`~tempo_lens.generation.generate_batch` names result ``i`` ``"<mode>-<i>"`` (``i`` the prompt's
    index in the call's list). Set it yourself to tell apart results of separate calls.
    """

    model: str
    prompt: str | None
    prompt_text: str
    config: GenerationConfig
    layout: TokenLayout
    token_strings: list[str]
    thresholds: list[float]
    stop_reason: str
    n_layers: int
    n_heads: int
    capture: CapturedAttention | None = None
    clean_text: str = ""
    pruning_events: list[PruneEvent] = field(default_factory=list)
    step_logits: list[Tensor] | None = field(default=None, repr=False)
    name: str = "run"
    cache: TokenCache | None = field(default=None, repr=False)  # generate(..., names_filter=...): hook points per token

    # the settings a reader asks for most, straight from the config (read-only)
    mode = _config_setting("mode")
    schedule = _config_setting("schedule")
    next_token_source = _config_setting("next_token_source")
    max_steps = _config_setting("max_steps")
    max_parallel = _config_setting("max_parallel")
    threshold = _config_setting("threshold")

    @property
    def pruning(self) -> dict | None:
        return None if self.config.pruning is None else self.config.pruning.describe()

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.layout.token_ids[: self.layout.n_prompt]

    @property
    def steps(self) -> list[StepRecord]:
        layout, records = self.layout, []
        for step in range(layout.n_steps):
            r = layout.step_range(step)
            records.append(
                StepRecord(
                    step=step,
                    logical_position=layout.logical_positions[r.start],
                    token_ids=[layout.token_ids[i] for i in r],
                    tokens=[self.token_strings[i] for i in r],
                    probs=[layout.probs[i] for i in r],
                    physical_range=(r.start, r.stop),
                    pruned=[layout.is_pruned(i) for i in r],
                    pruned_at_step=[layout.pruned_at[i] if layout.is_pruned(i) else None for i in r],
                    prune_score=[layout.prune_scores[i] if layout.is_pruned(i) else None for i in r],
                    threshold=self.thresholds[step],
                )
            )
        return records

    @property
    def text(self) -> str:
        """The prompt, then per step the token or ``[a/b/c]`` (whitespace siblings visible); pruned as ``~~b~~``."""
        return self.prompt_text + "".join(bracketed(r.tokens, r.pruned) for r in self.steps)

    def to_json_dict(self) -> dict:
        """Plain values for JSON: every setting of ``config`` (the schedule as its table), then the generation.

        A non-finite number (a NaN probability or prune score) is null.
        """
        settings = self.config.to_dict()
        settings["threshold_schedule"] = self.schedule.to_dict()
        return clean(
            {
                "model": self.model,
                "prompt": self.prompt,
                **settings,
                "prompt_token_ids": self.prompt_token_ids,
                "steps": [r.to_dict() for r in self.steps],
                "text": self.text,
                "clean_text": self.clean_text,
                "stop_reason": self.stop_reason,
            }
        )

    def save(self, directory, *, overwrite: bool = False):
        """Write this result (settings, layout, capture) to a folder; :func:`load_result` reads it back."""
        return save_result(self, directory, overwrite=overwrite)

    def run_with_cache(self, model, names_filter: NamesFilter, *, condition=None) -> TokenCache:
        """The hook points of ``names_filter`` for every token, from a teacher-forced replay of this run on ``model``
        (its own mode at shared positions, or a :class:`~tempo_lens.tools.Condition`); shaped as ``result.cache``."""
        return replay_cache(model, self, names_filter, condition)

    def to_dataframe(self):
        """One row per token: physical index, step, rank, logical position, token, probability, pruning."""
        return token_table(self)


def load_result(directory: str | os.PathLike) -> GenerationResult:
    """A result saved by :meth:`GenerationResult.save`, checked, without the model."""
    return GenerationResult(**read_result(directory))
