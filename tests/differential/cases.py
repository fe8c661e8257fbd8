"""One drawn case of the differential harness, and the hypothesis strategy that draws it.

A :class:`Case` holds plain values only (lengths and seeds rather than token lists), so hypothesis
shrinks it toward short prompts, few steps and no options, and its one-line ``str`` is the printout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import strategies as st

from tempo_lens.siblings import NEXT_TOKEN_SOURCES

from .models import DTYPES, FAMILIES, FAST_SETTINGS, family_shape

# Hook points that both model classes have ({L}: a drawn layer).
HOOK_POINTS = (
    "hook_embed",
    "blocks.{L}.hook_resid_pre",
    "blocks.{L}.ln1.hook_normalized",
    "blocks.{L}.attn.hook_attn_scores",
    "blocks.{L}.attn.hook_pattern",
    "blocks.{L}.attn.hook_z",
    "blocks.{L}.mlp.hook_post",
    "blocks.{L}.hook_resid_post",
    "ln_final.hook_normalized",
)
HOOK_KINDS = ("tl", "torch")  # model.hooks(fwd_hooks=...), or hook_dict[name].register_forward_hook
THRESHOLDS = (1e-6, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
FIRST_TOKEN = 1  # t1, the tokenizer's BOS


def pos_axis(hook_name: str) -> int:
    """The axis of ``hook_name``'s tensor with one entry per fed token (queries for attention scores and patterns)."""
    return 2 if hook_name.endswith(("hook_attn_scores", "hook_pattern")) else 1


@dataclass(frozen=True)
class Case:
    family: str
    backend: str
    dtype: str  # a key of DTYPES
    fast: bool | None  # load_model(fast=...): None the default speed paths, False none
    api: str  # "generate" or "generate_batch"
    prompts: tuple[tuple[int, int], ...]  # (length, seed) per prompt
    mode: str
    threshold: float
    max_parallel: int
    max_steps: int
    pruning: tuple[str, float] | None  # ("attention", threshold) or ("similarity", threshold)
    capture: bool | tuple[int, ...]  # True: every layer; a tuple: those layers (negative counts from the last)
    hooks: tuple[tuple[str, str], ...]  # (kind, hook point) of the user's hooks
    next_token_source: str = "mixture"  # one of tempo_lens.siblings.NEXT_TOKEN_SOURCES
    batch_size: int | None = None  # generate_batch's rows per forward (None: its default)
    threshold_schedule: str | None = None  # bezier:FINAL[:P1:P2] or relu:FINAL:KNEE

    def prompt_ids(self) -> list[list[int]]:
        """Each prompt's token ids: BOS, then tokens drawn from the prompt's seed (EOS, id 2, left out)."""
        out = []
        for length, seed in self.prompts:
            rng = random.Random(seed)
            out.append([FIRST_TOKEN] + [rng.randrange(3, 96) for _ in range(length - 1)])
        return out

    def physical_bound(self) -> int:
        """The most physical positions one prompt's generation can reach (every step at ``max_parallel``)."""
        return max(length + self.max_steps * self.max_parallel for length, _ in self.prompts)

    def lane_bound(self) -> int:
        """The most physical positions one lane of a batch can reach: its rows may share it, side by side."""
        return sum(length + self.max_steps * self.max_parallel for length, _ in self.prompts)

    def __str__(self) -> str:
        lengths = ",".join(str(length) for length, _ in self.prompts)
        seeds = ",".join(str(seed) for _, seed in self.prompts)
        parts = [
            f"{self.family}/{self.backend}/{self.dtype}" + ("" if self.fast is None else "/fast=off"),
            f"{self.api}(prompt lengths [{lengths}] seeds [{seeds}]",
            f"mode={self.mode} threshold={self.threshold:g} max_parallel={self.max_parallel} max_steps={self.max_steps}",
        ]
        if self.next_token_source != "mixture":
            parts.append(f"next_token_source={self.next_token_source}")
        if self.threshold_schedule:
            parts.append(f"threshold_schedule={self.threshold_schedule}")
        if self.batch_size is not None:
            parts.append(f"batch_size={self.batch_size}")
        if self.pruning:
            parts.append(f"pruning={self.pruning[0]}:{self.pruning[1]:g}")
        if self.capture:
            parts.append(f"capture={self.capture if self.capture is True else list(self.capture)}")
        if self.hooks:
            parts.append("hooks=[" + ", ".join(f"{k}:{name}" for k, name in self.hooks) + "]")
        return " ".join(parts) + ")"


@st.composite
def prompt_lengths(draw, window: int | None, longest: int) -> int:
    """Short prompts, prompts around the sliding window (or 64) and anything up to the context."""
    edge = window or 64
    return draw(
        st.one_of(
            st.integers(1, min(12, longest)), st.integers(max(1, edge - 12), min(edge + 12, longest)), st.integers(1, longest)
        )
    )


@st.composite
def cases(draw, backends: list[str], families: tuple[str, ...] = FAMILIES, dtypes: tuple[str, ...] = tuple(DTYPES)) -> Case:
    family = draw(st.sampled_from(families))
    shape = family_shape(family)
    max_steps = draw(st.integers(1, 8))
    api = draw(st.sampled_from(("generate", "generate_batch")))
    n_prompts = 1 if api == "generate" else draw(st.integers(1, 4))
    longest = shape.n_ctx - max_steps  # the logical length stays within the context
    prompts = tuple((draw(prompt_lengths(shape.window, longest)), draw(st.integers(0, 2**16))) for _ in range(n_prompts))
    pruning = draw(
        st.one_of(
            st.none(),
            st.tuples(st.just("attention"), st.sampled_from((0.05, 0.3, 1.0))),
            st.tuples(st.just("similarity"), st.sampled_from((0.0, 0.5, 0.9))),
        )
    )
    hooks = tuple(
        (kind, template.replace("{L}", str(draw(st.integers(0, shape.n_layers - 1)))))
        for kind, template in draw(st.lists(st.tuples(st.sampled_from(HOOK_KINDS), st.sampled_from(HOOK_POINTS)), max_size=2))
    )
    return Case(
        family=family,
        backend=draw(st.sampled_from(backends)),
        dtype=draw(st.sampled_from(dtypes)),
        fast=draw(st.sampled_from(FAST_SETTINGS)),
        api=api,
        prompts=prompts,
        mode=draw(st.sampled_from(("isolated", "visible"))),
        threshold=draw(st.sampled_from(THRESHOLDS)),
        max_parallel=draw(st.integers(1, 8)),
        max_steps=max_steps,
        pruning=pruning,
        capture=draw(st.one_of(st.booleans(), st.sampled_from(((0,), (-1,), (0, 2))))),
        hooks=hooks,
        next_token_source=draw(st.sampled_from(NEXT_TOKEN_SOURCES)),
        threshold_schedule=draw(st.sampled_from((None, "bezier:0.5", "bezier:0.001:0.2:0.9", "relu:0.02:0.5"))),
        batch_size=None if api == "generate" else draw(st.sampled_from((None, 1, 2))),
    )
