"""TEMPO generation: every token above a threshold is kept, siblings share one logical position.

One forward pass per step feeds all of a step's siblings at once over the KV cache of everything
before. Positions and masks come only from hooks (:mod:`tempo_lens.hooks`), entered once for the
whole generation; the :class:`~tempo_lens.layout.TokenLayout` they read is updated step by step.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .capture import CapturedAttention, CaptureSpec
from .compat import cache_kwarg_name, patch_bridge_kv_cache
from .errors import InvalidInputError
from .hooks import PatternRecorder, tempo_hooks
from .layout import MODES, TokenLayout
from .model import model_name
from .schedules import ThresholdSchedule, check_threshold
from .text import bracketed

if TYPE_CHECKING:
    from .pruning import PruningStrategy

NEXT_TOKEN_SOURCES = ("mixture", "top", "last")
NextTokenSource = Literal["mixture", "top", "last"]


# ---- records ------------------------------------------------------------------------------------

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


@dataclass
class GenerationResult:
    """The layout of a TEMPO generation and what is needed to read it."""

    model: str
    prompt: str | None
    prompt_text: str
    mode: str
    schedule: ThresholdSchedule
    next_token_source: str
    max_steps: int
    max_parallel: int
    layout: TokenLayout
    token_strings: list[str]
    thresholds: list[float]
    stop_reason: str
    n_layers: int
    n_heads: int
    capture: CapturedAttention | None = None
    clean_text: str = ""
    pruning: dict | None = None
    seed: int | None = None
    step_logits: list[Tensor] | None = field(default=None, repr=False)

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

    @property
    def threshold(self) -> float:
        return self.schedule.start

    def to_json_dict(self) -> dict:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "mode": self.mode,
            "threshold": self.schedule.start,
            "threshold_schedule": self.schedule.to_dict(),
            "next_token_source": self.next_token_source,
            "max_steps": self.max_steps,
            "max_parallel": self.max_parallel,
            "prompt_token_ids": self.prompt_token_ids,
            "steps": [r.to_dict() for r in self.steps],
            "text": self.text,
            "clean_text": self.clean_text,
            "stop_reason": self.stop_reason,
            "pruning": self.pruning,
        }


# ---- helpers -------------------------------------------------------------------------------------

def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    if tokenizer is None:
        return "".join(f"<{i}>" for i in ids)
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def eos_token_ids(model: Any) -> set[int]:
    """EOS ids of the tokenizer and of the generation config."""
    ids: set[int] = set()
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


def prompt_token_ids(model: Any, prompt: str | Sequence[int] | Tensor, chat: bool = False) -> list[int]:
    """The ids fed to the model for a prompt (BOS included when the tokenizer adds one)."""
    if isinstance(prompt, Tensor):
        prompt = prompt.flatten().tolist()
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"the prompt is not valid UTF-8 ({exc}); pass text or token ids") from None
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidInputError("the prompt is empty; pass some text (e.g. 'The cat sat on the') or token ids")
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise InvalidInputError("this model has no tokenizer; pass the prompt as token ids")
        if chat:
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInputError("chat=True needs a tokenizer with a chat template; this one has none")
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in tokenizer(prompt)["input_ids"]]
    try:
        ids = [int(i) for i in prompt]
    except (TypeError, ValueError):
        raise InvalidInputError(f"the prompt must be text or a flat sequence of token ids, got {type(prompt).__name__}") from None
    if not ids:
        raise InvalidInputError("the prompt is empty; pass some text or at least one token id")
    vocab = model.cfg.d_vocab
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise InvalidInputError(f"token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})")
    return ids


def check_int(value: object, name: str, minimum: int) -> int:
    """An integer setting (``max_steps``, ``max_parallel``, ``min_steps``) of at least ``minimum``, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_seed(seed: object) -> None:
    """None, or an integer seed in ``0..2**32 - 1`` (what numpy accepts)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 2**32 - 1):
        raise InvalidInputError(f"seed must be an integer in 0..{2**32 - 1}, got {seed!r}")


def check_next_token_source(source: str) -> None:
    if source not in NEXT_TOKEN_SOURCES:
        raise InvalidInputError(f"unknown next_token_source {source!r}; use one of {', '.join(NEXT_TOKEN_SOURCES)}")


def select_siblings(
    probs: Float[Tensor, "vocab"], threshold: float, max_parallel: int
) -> tuple[list[int], list[float], int]:
    """Tokens with probability >= threshold, highest first, capped; the top token if none clears it.

    Returns (ids, probs, how many cleared the threshold before the cap).
    """
    above = int((probs >= threshold).sum())
    k = min(max(above, 1), max_parallel)
    top = torch.topk(probs, k)
    return [int(i) for i in top.indices], [float(p) for p in top.values], above


def next_distribution(
    logits: Float[Tensor, "siblings vocab"], sibling_probs: Sequence[float], source: str
) -> Float[Tensor, "vocab"]:
    """The next step's distribution from the rows of the new siblings (mixture, top or last row)."""
    rows = torch.softmax(logits.float(), dim=-1)
    if source == "top":
        return rows[0]
    if source == "last":
        return rows[-1]
    weights = torch.tensor(sibling_probs, dtype=torch.float32, device=rows.device)
    weights = weights / weights.sum()
    return (weights[:, None] * rows).sum(0)


def check_generation_args(model: Any, n_prompt: int, max_steps: int, mode: str, source: str) -> None:
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use 'isolated' or 'visible'")
    check_next_token_source(source)
    n_ctx = int(model.cfg.n_ctx)
    if n_prompt + max_steps > n_ctx:
        raise InvalidInputError(
            f"prompt ({n_prompt} tokens) + max_steps ({max_steps}) = {n_prompt + max_steps} logical positions exceeds "
            f"the model's context of {n_ctx}; shorten the prompt or lower max_steps"
        )


def forward_step(model: Any, ids: list[int], cache: Any, device: Any) -> Float[Tensor, "q vocab"]:
    """One cached forward of new tokens; returns their logits rows."""
    tokens = torch.tensor([ids], dtype=torch.long, device=device)
    kwargs = {cache_kwarg_name(model.original_model): cache, "use_cache": True}
    return model(tokens, **kwargs)[0]


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.original_model.config)


# ---- the generator -------------------------------------------------------------------------------

def generate(
    model: Any,
    prompt: str | Sequence[int] | Tensor,
    threshold: float = 0.1,
    max_steps: int = 10,
    mode: str = "isolated",
    max_parallel: int = 8,
    min_steps: int = 0,
    next_token_source: str = "mixture",
    *,
    threshold_schedule: ThresholdSchedule | str | None = None,
    pruning: "PruningStrategy | None" = None,
    capture: CaptureSpec | bool | None = None,
    chat: bool = False,
    seed: int | None = None,
    keep_logits: bool = False,
) -> GenerationResult:
    """Generate with TEMPO on a TransformerBridge.

    ``threshold`` is the selection threshold in (0, 1]; ``threshold_schedule`` (a
    :class:`ThresholdSchedule` or its CLI form ``bezier:FINAL[:P1:P2]`` / ``relu:FINAL:KNEE``) makes
    it vary over steps. ``mode`` is ``"isolated"`` (siblings cannot see each other) or ``"visible"``.
    ``pruning`` (:class:`~tempo_lens.pruning.AttentionPruning` or :class:`~tempo_lens.pruning.SimilarityPruning`)
    collapses earlier parallel sets retroactively; ``capture`` records
    each step's attention pattern (``True`` for all layers, or a :class:`CaptureSpec`).
    ``keep_logits`` keeps each step's logits rows (``result.step_logits``) for checks against an oracle.
    """
    if isinstance(threshold_schedule, ThresholdSchedule):
        schedule = threshold_schedule
    else:
        schedule = ThresholdSchedule.parse(check_threshold(threshold), threshold_schedule)
    max_steps = check_int(max_steps, "max_steps", 1)
    max_parallel = check_int(max_parallel, "max_parallel", 1)
    min_steps = check_int(min_steps, "min_steps", 0)
    check_seed(seed)
    ids = prompt_token_ids(model, prompt, chat=chat)
    check_generation_args(model, len(ids), max_steps, mode, next_token_source)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    patch_bridge_kv_cache()

    tokenizer = getattr(model, "tokenizer", None)
    device = next(model.original_model.parameters()).device
    eos = eos_token_ids(model)
    layout = TokenLayout.from_prompt(ids)
    token_strings = [_decode(tokenizer, [i]) for i in ids]
    capture_spec = CaptureSpec() if capture is True else (capture or None)
    n_layers = int(model.cfg.n_layers)
    captured = CapturedAttention(capture_spec.layers_for(n_layers)) if capture_spec else None
    recorded_layers = set(captured.layers if captured else []) | set(pruning.layers_for(n_layers) if pruning else [])
    recorder = PatternRecorder(recorded_layers) if recorded_layers else None

    hooks = tempo_hooks(model, layout, mode) + (recorder.hooks() if recorder else []) + (pruning.hooks(model, layout) if pruning else [])
    thresholds: list[float] = []
    step_logits: list[Tensor] = []
    stop_reason = "max_steps"
    capped_warned = False
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        cache = new_cache(model)
        logits = forward_step(model, ids, cache, device)
        if recorder:
            recorder.take()
        distribution = torch.softmax(logits[-1].float(), dim=-1)
        for step in range(max_steps):
            thr = schedule.at(step, max_steps)
            thresholds.append(thr)
            probs = distribution
            if step < min_steps and eos:
                probs = probs.clone()
                probs[list(eos)] = 0.0
            sibling_ids, sibling_probs, n_above = select_siblings(probs, thr, max_parallel)
            if n_above > max_parallel and not capped_warned:
                warnings.warn(
                    f"step {step}: {n_above} tokens clear threshold {thr:g}; keeping the top {max_parallel} "
                    "(raise max_parallel or the threshold to change this)",
                    stacklevel=2,
                )
                capped_warned = True
            layout.append_step(sibling_ids, sibling_probs)
            token_strings.extend(_decode(tokenizer, [i]) for i in sibling_ids)
            logits = forward_step(model, sibling_ids, cache, device)
            patterns = recorder.take() if recorder else {}
            if captured is not None and capture_spec.wants_step(step):
                captured.record(step, patterns)
            if pruning is not None:
                pruning.after_step(layout, patterns, step)
            if keep_logits:
                step_logits.append(logits.detach().cpu())
            distribution = next_distribution(logits, sibling_probs, next_token_source)
            if eos.intersection(sibling_ids):
                stop_reason = "eos"
                break

    prompt_text = prompt if isinstance(prompt, str) and not chat else _decode(tokenizer, ids)
    top_ids = [layout.token_ids[layout.step_range(s).start] for s in range(layout.n_steps)]
    return GenerationResult(
        model=model_name(model),
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_text=prompt_text,
        mode=mode,
        schedule=schedule,
        next_token_source=next_token_source,
        max_steps=max_steps,
        max_parallel=max_parallel,
        layout=layout,
        token_strings=token_strings,
        thresholds=thresholds,
        stop_reason=stop_reason,
        n_layers=n_layers,
        n_heads=int(model.cfg.n_heads),
        capture=captured,
        clean_text=prompt_text + _decode(tokenizer, top_ids),
        pruning=pruning.describe() if pruning is not None else None,
        seed=seed,
        step_logits=step_logits if keep_logits else None,
    )
