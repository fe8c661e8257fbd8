"""One prompt's TEMPO generation as a state machine: choose siblings, then read the forward that fed them.

``generate`` drives one row, ``generate_batch`` drives many through one forward per step; both use
this class, so a batched row makes exactly the decisions a lone generation makes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..backends import Backend
from ..capture import CapturedAttention
from ..errors import InvalidInputError, NonFiniteLogitsError
from ..layout import TokenLayout
from ..models.loading import model_name
from .config import GenerationConfig
from .memory import check_fits
from .result import GenerationResult
from .steps import check_context, decode, next_distribution, prompt_token_ids, select_siblings

if TYPE_CHECKING:
    from ..pruning import PruningSession


@dataclass
class GenerationRow:
    """The mutable state of one generation: its layout, capture, pruning session and next distribution."""

    backend: Backend
    prompt: Any
    config: GenerationConfig
    ids: list[int]
    layout: TokenLayout
    token_strings: list[str]
    eos: set[int]
    capture: CapturedAttention | None
    pruning: PruningSession | None
    keep_logits: bool = False
    thresholds: list[float] = field(default_factory=list)
    step_logits: list[Tensor] = field(default_factory=list)
    distribution: Tensor | None = None
    stop_reason: str | None = None
    capped_warned: bool = False
    warn_stacklevel: int = 3  # the user's call: choose → generate → caller

    @classmethod
    def start(
        cls,
        backend: Backend,
        prompt: Any,
        config: GenerationConfig,
        row: int = 0,
        keep_logits: bool = False,
        ids: list[int] | None = None,
    ) -> GenerationRow:
        """Tokenise and check the prompt (before any model work; ``ids``: already done) and set up capture and pruning."""
        model = backend.model
        ids = checked_ids(backend, prompt, config) if ids is None else ids
        layout = TokenLayout.from_prompt(ids)
        n_layers = int(model.cfg.n_layers)
        capture = CapturedAttention(config.capture.layers_for(n_layers)) if config.capture else None
        pruning = config.pruning.start(model, layout, row) if config.pruning is not None else None
        tokenizer = getattr(model, "tokenizer", None)
        return cls(
            backend=backend,
            prompt=prompt,
            config=config,
            ids=ids,
            layout=layout,
            token_strings=[decode(tokenizer, [i]) for i in ids],
            eos=backend.eos_token_ids(),
            capture=capture,
            pruning=pruning,
            keep_logits=keep_logits,
        )

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def recorded_layers(self) -> set[int]:
        """Layers whose attention pattern this row needs after each forward (capture and pruning)."""
        captured = self.capture.layers if self.capture is not None else []
        return set(captured) | set(self.pruning.layers if self.pruning is not None else [])

    @property
    def hooks(self) -> list:
        return list(self.pruning.hooks) if self.pruning is not None else []

    def read_prompt(self, logits: Float[Tensor, "pos d_vocab"]) -> None:
        """The prompt's forward: its last row gives step 0's distribution."""
        check_finite(logits, "the prompt's forward (before step 0)")
        self.distribution = torch.softmax(logits[-1].float(), dim=-1)

    def choose(self) -> list[int]:
        """Select the next step's siblings and append them to the layout; returns their ids."""
        step, config = self.layout.n_steps, self.config
        threshold = config.schedule.at(step, config.max_steps)
        self.thresholds.append(threshold)
        probs = self.distribution
        assert probs is not None, "read_prompt or read_step sets the distribution before choose"
        if step < config.min_steps and self.eos:
            probs = probs.clone()
            probs[list(self.eos)] = 0.0
        ids, sibling_probs, n_above = select_siblings(probs, threshold, config.max_parallel)
        if n_above > config.max_parallel and not self.capped_warned:
            warnings.warn(
                f"step {step}: {n_above} tokens clear threshold {threshold:g}; keeping the top {config.max_parallel} "
                "(raise max_parallel or the threshold to change this)",
                stacklevel=self.warn_stacklevel,
            )
            self.capped_warned = True
        self.layout.append_step(ids, sibling_probs)
        tokenizer = getattr(self.backend.model, "tokenizer", None)
        self.token_strings.extend(decode(tokenizer, [i]) for i in ids)
        return ids

    def read_step(self, logits: Float[Tensor, "sibling d_vocab"], patterns: dict[int, Tensor]) -> None:
        """The forward that fed the newest step: capture, prune, the next distribution, and the stop rule."""
        step = self.layout.n_steps - 1
        r = self.layout.step_range(step)
        check_finite(logits, f"step {step}'s forward")
        if self.capture is not None and self.config.capture.wants_step(step):
            self.capture.record(step, patterns)
        if self.pruning is not None:
            self.pruning.after_step(patterns, step)
        if self.keep_logits:
            self.step_logits.append(logits.detach().cpu())
        self.distribution = next_distribution(logits, self.layout.probs[r.start : r.stop], self.config.next_token_source)
        self.apply_stop_rule()

    def apply_stop_rule(self) -> None:
        """After the newest step: ``"eos"`` if it holds an EOS token, else ``"max_steps"`` once it is the last."""
        r = self.layout.step_range(self.layout.n_steps - 1)
        if self.eos.intersection(self.layout.token_ids[r.start : r.stop]):
            self.stop_reason = "eos"
        elif self.layout.n_steps >= self.config.max_steps:
            self.stop_reason = "max_steps"

    def result(self) -> GenerationResult:
        model = self.backend.model
        tokenizer = getattr(model, "tokenizer", None)
        prompt, chat = self.prompt, self.config.chat
        prompt_text = prompt if isinstance(prompt, str) and not chat else decode(tokenizer, self.ids)
        layout = self.layout
        top_ids = [layout.token_ids[layout.step_range(s).start] for s in range(layout.n_steps)]
        return GenerationResult(
            model=model_name(model),
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_text=prompt_text,
            config=self.config,
            layout=layout,
            token_strings=self.token_strings,
            thresholds=self.thresholds,
            stop_reason=self.stop_reason or "max_steps",
            n_layers=int(model.cfg.n_layers),
            n_heads=int(model.cfg.n_heads),
            capture=self.capture,
            clean_text=prompt_text + decode(tokenizer, top_ids),
            pruning_events=list(self.pruning.events) if self.pruning is not None else [],
            step_logits=self.step_logits if self.keep_logits else None,
        )


def check_finite(logits: Float[Tensor, "pos d_vocab"], where: str) -> None:
    """Stop with an error naming ``where`` when ``logits`` hold NaN or inf: every later choice would be meaningless."""
    if logits.numel() == 0:
        return
    low, high = torch.aminmax(logits)  # both finite exactly when every value is: NaN spreads to both, +-inf to one
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        finite = torch.isfinite(logits)
        n_nan = int(torch.isnan(logits).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise NonFiniteLogitsError(
            f"{where} gave non-finite logits ({n_nan} NaN, {n_inf} inf of {logits.numel()} values in "
            f"{logits.shape[0]} rows); a hook (e.g. a NaN or inf bias), the weights or the dtype's range produced them. "
            "Check the hooks you added, or load the model in float32"
        )


def checked_ids(backend: Backend, prompt: Any, config: GenerationConfig) -> list[int]:
    """The prompt's token ids, once it is known to fit the model's context and memory with ``config``."""
    ids = prompt_token_ids(backend.model, prompt, chat=config.chat)
    check_context(backend, len(ids), config)
    check_fits(backend, len(ids), config.max_steps, config.max_parallel)
    return ids


def resolve_config(config: GenerationConfig | None, overrides: dict[str, Any]) -> GenerationConfig:
    """``config`` (default settings when None) with keyword overrides applied and checked."""
    base = config if config is not None else GenerationConfig()
    if not isinstance(base, GenerationConfig):
        raise InvalidInputError(f"config must be a GenerationConfig, got {type(base).__name__}")
    return base.replace(**overrides) if overrides else base
