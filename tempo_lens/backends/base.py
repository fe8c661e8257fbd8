"""The one interface every stage uses to drive a TransformerLens model, whatever its class.

Generation, replay, capture, pruning, the tools and the analysis read a model only through a
:class:`Backend`: its device and weights, positions (the hooks that move tokens to chosen logical
positions), the KV cache and one forward step, the final norm and unembedding, and EOS ids. Masks and
patterns need nothing class-specific: both model classes expose ``blocks.L.attn.hook_attn_scores``
(``[batch, head_index, query_pos, key_pos]``, masked entries at or below :func:`masked_threshold`) and
``blocks.L.attn.hook_pattern``.

A backend without hook points (``uses_hook_points = False``: nnsight) takes TEMPO as the model's inputs
instead: generation and replay hand it each forward as a :class:`TempoStep` (tokens, positions, the
layout's mask, physical indices) and :meth:`Backend.tempo_forward` returns the logits and the asked
layers' attention patterns.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import InvalidInputError
from ..position_source import PositionSource, integer_positions, last_positions, positions_of

BackendName = Literal["bridge", "hooked", "nnsight"]
ENV = "TEMPO_LENS_FAST"  # the speed paths' switch (Backend.apply_speedups), for every backend
_OFF, _ON, _AUTO = {"0", "false", "off", "no"}, {"1", "true", "on", "yes"}, {"", "auto"}
PositionKind = Literal["rotary", "learned"]
Hook = tuple[str, Callable[..., Tensor]]
OneRowKernel = Literal["stock", "packed", "by_column"]


@dataclass
class SpeedRecord:
    """The speed paths a model runs, and the linear kernel plan where it has one (recorded with every experiment).

    ``kernel_plan`` names the cached per-machine measurement the kernels came from (a digest of CPU, torch,
    threads, dtype and layer shapes; None where nothing was measured or it could not be cached).
    """

    paths: list[str] = field(default_factory=list)
    packed_from_rows: int | None = None
    one_row: OneRowKernel = "stock"
    kernel_plan: str | None = None
    plan_measured: str | None = None


def fast_setting(fast: bool | None = None) -> bool | None:
    """``fast`` when given, else ``TEMPO_LENS_FAST``: False (off), True (every path) or None (default: auto)."""
    if fast is not None:
        return bool(fast)
    value = os.environ.get(ENV, "").strip().lower()
    if value in _AUTO:
        return None
    if value in _OFF | _ON:
        return value in _ON
    raise InvalidInputError(
        f"{ENV}={os.environ[ENV]!r} is not understood; set it to 0 (stock paths), 1 (all fast paths) or unset it"
    )


@dataclass(frozen=True)
class TempoStep:
    """One forward with TEMPO given as model inputs, for a backend without hook points (:meth:`Backend.tempo_forward`).

    ``tokens`` are the columns fed (the new ones with a cache, every one without); ``positions`` cover
    every key column (padding included), ``blocked`` the fed rows (True = hidden: causality, isolation,
    pruning and other rows, as the layout decides); ``windowed[w]`` is that mask for the layers whose
    sliding window is ``w`` (:meth:`Backend.attention_windows`). The last ``n_out`` rows of logits and
    patterns come back. ``siblings`` is what user code run inside the forward is told about the fed tokens.
    Activations go by TransformerLens's names: each ``(name, read)`` of ``readers`` is called after the
    forward with that activation's last ``n_out`` rows; each ``(name, edit)`` of ``edits`` replaces the
    activation by ``edit(activation, None)`` inside it, as a TransformerLens hook would.
    """

    tokens: Int[Tensor, "batch pos"]
    positions: Float[Tensor, "batch key_pos"]
    blocked: Bool[Tensor, "batch query_pos key_pos"]
    windowed: dict[int, Bool[Tensor, "batch query_pos key_pos"]] = field(default_factory=dict)
    layers: tuple[int, ...] = ()
    n_out: int = 0
    siblings: list[Any] = field(default_factory=list)
    readers: list[tuple[str, Callable[[Tensor], Any]]] = field(default_factory=list)
    edits: list[tuple[str, Callable[..., Tensor]]] = field(default_factory=list)


class Backend(ABC):
    """What tempo_lens needs of one model instance; subclasses hold everything that depends on its class."""

    name: ClassVar[BackendName]
    uses_hook_points: ClassVar[bool] = True  # False: TEMPO goes in as model inputs (:meth:`tempo_forward`)

    def __init__(self, model: Any):
        self.model = model

    # ---- facts -------------------------------------------------------------------------------

    @abstractmethod
    def weights(self) -> Iterator[Tensor]:
        """The model's parameters (the wrapped model's, for a bridge)."""

    @property
    def device(self) -> torch.device:
        return next(self.weights()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.weights()).dtype

    @abstractmethod
    def eos_token_ids(self) -> set[int]:
        """EOS ids of the tokenizer and of the generation config."""

    @abstractmethod
    def attention_windows(self) -> list[int | None]:
        """Each layer's sliding window (a query sees itself and the ``window - 1`` physically preceding keys), or None.

        None is full attention; Gemma 3's sliding layers give an int. TEMPO applies these windows in its own
        mask (:meth:`TokenLayout.blocked <tempo_lens.layout.TokenLayout.blocked>`, ``window=``).
        """

    @abstractmethod
    def physical_limit(self) -> int | None:
        """The longest physical sequence (KV cache included) one forward can take, or None when unbounded.

        A learned position table, or a precomputed rotary table, has this many rows; the model indexes it
        at physical positions before any hook can move them.
        """

    # ---- positions ---------------------------------------------------------------------------

    @abstractmethod
    def position_kind(self) -> PositionKind | None:
        """``"rotary"``, ``"learned"`` (absolute table at ``hook_pos_embed``) or None (TEMPO cannot share positions)."""

    @abstractmethod
    def position_hook_names(self) -> list[str]:
        """The hook points the position hooks of this model use (checked at load, probed in a forward)."""

    @abstractmethod
    def rope_position_hooks(self, positions: PositionSource) -> list[Hook]:
        """Rotary embeddings evaluated at ``positions`` instead of physical indices."""

    @abstractmethod
    def position_table(self) -> Float[Tensor, "n_ctx d_model"]:
        """The learned absolute position table (GPT-2 family)."""

    def learned_position_hooks(self, positions: PositionSource) -> list[Hook]:
        """Rows of the learned position table at ``positions`` (``hook_pos_embed``, ``[batch, q, d_model]``)."""
        table = self.position_table()

        def hook_pos(pos_embed: Float[Tensor, "batch query_pos d_model"], hook: Any = None) -> Tensor:
            wanted = integer_positions(last_positions(positions_of(positions)[0](), pos_embed.shape[-2]))
            rows = table[wanted.to(table.device)].to(pos_embed.dtype)
            return rows.expand_as(pos_embed) if rows.ndim == 2 else rows  # [batch, q, d_model]: one row per prompt

        return [("hook_pos_embed", hook_pos)]

    # ---- running -----------------------------------------------------------------------------

    def prepare(self) -> None:  # noqa: B027  (most backends need nothing)
        """Make the model ready for cached TEMPO decoding (idempotent)."""

    @abstractmethod
    def apply_speedups(self, fast: bool | None) -> list[str]:
        """Switch on the exact speed paths this class has (``fast``: None default, False none); what is on."""

    def speed_record(self) -> SpeedRecord:
        """The speed paths on now (and their kernel plan), for the experiment's metadata; none by default."""
        return SpeedRecord()

    @abstractmethod
    def new_cache(self, batch: int) -> Any:
        """An empty KV cache for ``batch`` rows."""

    def repeat_cache(self, cache: Any, batch: int) -> Any:
        """A new cache holding ``batch`` copies of a one-row ``cache`` (left as it is), to continue it ``batch`` ways."""
        raise NotImplementedError(f"the {self.name} backend cannot copy its KV cache")

    @abstractmethod
    def forward(self, tokens: Int[Tensor, "batch pos"], cache: Any = None) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits of ``tokens``; with a cache, they continue it (and it grows by them)."""

    @abstractmethod
    def run_with_cache(self, tokens: Int[Tensor, "batch pos"], names_filter: Any) -> tuple[Tensor, Any]:
        """Logits and TransformerLens's activation cache of one full forward."""

    def forward_step(self, tokens: list[list[int]], cache: Any) -> Float[Tensor, "batch pos d_vocab"]:
        """One cached TEMPO forward of new tokens (one list per batch row), under TEMPO's hooks.

        A backend whose model has sliding windows (:meth:`attention_windows`) turns the model's own
        window masks off in this forward: they count distance in columns of the batch, which padding and
        rows sharing a lane stretch, while TEMPO's mask hooks apply each row's window from its layout.
        """
        return self.forward(torch.tensor(tokens, dtype=torch.long, device=self.device), cache)

    def forward_read(self, tokens: list[list[int]], cache: Any, read: Sequence[int]) -> Float[Tensor, "batch read d_vocab"]:
        """:meth:`forward_step` when only the logits of columns ``read`` are wanted (a prompt's last token per row).

        A backend that can skip the unembedding of the other columns does so only where nothing observes it, so every
        hook sees what a full forward gives it; by default the full logits are sliced.
        """
        return self.forward_step(tokens, cache)[:, list(read)]

    def tempo_forward(
        self, step: TempoStep, cache: Any = None, **options: Any
    ) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[int, Float[Tensor, "batch head_index query_pos key_pos"]]]:
        """Logits and attention patterns of one forward with positions and masks as inputs (``uses_hook_points`` False)."""
        raise NotImplementedError(f"the {self.name} backend applies TEMPO through hook points (tempo_lens.hooks)")

    def model_problem(self) -> str | None:
        """What a model without hook points lacks for TEMPO, or None (``load_model`` checks hook backends with ``hooks_problem``)."""
        return None

    # ---- reading -----------------------------------------------------------------------------

    @abstractmethod
    def final_residual_hook(self) -> str:
        """The hook point holding the residual stream the final norm reads (``[batch, pos, d_model]``)."""

    @abstractmethod
    def final_norm(self) -> torch.nn.Module:
        """The final norm as a plain module (``weight``, optional ``bias``) that fires no hooks."""

    @abstractmethod
    def unembed_logits(self, normed: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Logits of normalised residuals (the model's own unembedding, no hooks)."""


def eos_ids(tokenizer: Any, configured: Any) -> set[int]:
    """EOS ids of the tokenizer and of a generation config's ``eos_token_id`` (an id or a list)."""
    ids: set[int] = set()
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(int(e) for e in configured)
    return ids
