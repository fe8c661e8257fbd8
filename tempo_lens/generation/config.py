"""``GenerationConfig``: the one definition of TEMPO's generation settings.

Everything that names a setting derives from this dataclass's fields: ``generate`` and
``generate_batch`` take it (or keyword overrides of it), experiment configs read its keys from TOML,
the CLI builds its flags and help text from the field metadata, and misspelled keys get a "did you
mean" hint from the same list. Validation happens once, in ``__post_init__``, so an invalid config
cannot exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..capture import CaptureSpec
from ..errors import InvalidInputError
from ..layout import MODES, Mode
from ..pruning import AttentionPruning, SimilarityPruning, strategy_from_table
from ..schedules import ThresholdSchedule, check_threshold
from ..siblings import NEXT_TOKEN_SOURCES
from ..validation import check_choice, check_int, reject_unknown

MAX_PARALLEL_LIMIT = 1 << 18  # larger than any vocabulary: a step cannot have more siblings
PruningStrategy = AttentionPruning | SimilarityPruning


def _setting(default: Any, help: str, *, flag: bool = True, choices: Sequence[str] | None = None, **extra: Any) -> Any:
    """A field with the help text the CLI shows (``flag=False``: not a CLI flag of its own)."""
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, **extra}
    if isinstance(default, dataclasses._MISSING_TYPE):  # pragma: no cover - every setting has a default
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def pruning_from_mapping(table: Mapping[str, Any]) -> PruningStrategy:
    """A pruning strategy from a config table (``strategy = "attention"`` (default) or ``"similarity"``)."""
    if not isinstance(table, Mapping):
        raise InvalidInputError(f"pruning must be a table of settings, got {table!r}")
    return strategy_from_table(dict(table))


# The command line's pruning flags: each sets its strategy's threshold (the strategy's first setting).
PRUNING_FLAGS: dict[str, tuple[str, str, str]] = {  # flag: (strategy, what the value is, help)
    "--prune-threshold": (
        "attention",
        "a number >= 0 (0 never prunes)",
        "attention pruning: collapse earlier sets scoring below X (>= 0; 0 never prunes; default off)",
    ),
    "--prune-similarity": (
        "similarity",
        "a number (cosine similarity, -1..1)",
        "similarity pruning: drop siblings whose last-layer hidden state has cosine similarity >= X "
        "with their set's top sibling (default off)",
    ),
}


def capture_from_value(value: object) -> CaptureSpec | None:
    """``None``/``False`` (no capture), ``True`` (all layers and steps), a list of layers, a table or a CaptureSpec."""
    if value is None or value is False:
        return None
    if value is True:
        return CaptureSpec()
    if isinstance(value, CaptureSpec):
        return value
    if isinstance(value, Mapping):
        reject_unknown(value, {"layers", "steps"}, "[capture]")
        return CaptureSpec(
            layers=_all_or_list(value.get("layers"), "capture.layers"),
            steps=_all_or_list(value.get("steps"), "capture.steps", minimum=0),
        )
    if isinstance(value, (list, tuple)):
        return CaptureSpec(layers=_all_or_list(list(value), "capture layers"))
    raise InvalidInputError(f"capture must be true, false, a list of layers or a CaptureSpec, got {value!r}")


def _all_or_list(value: Any, name: str, minimum: int | None = None) -> list[int] | None:
    if value is None or value == "all":
        return None
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or (minimum is not None and any(v < minimum for v in value)):
        bound = "integers >= 0" if minimum is not None else "layer indices (negative counts from the last)"
        raise InvalidInputError(f'{name} must be "all" or a list of {bound}, got {value!r}')
    twice = sorted({v for v in value if list(value).count(v) > 1})
    if twice:
        raise InvalidInputError(f"{name} lists {twice} more than once; list each once")
    return list(value)


@dataclass(frozen=True)
class GenerationConfig:
    """The settings of one TEMPO generation. Invalid values are refused on construction."""

    threshold: float = _setting(0.1, "selection threshold in (0, 1]: every token at least this likely becomes a sibling")
    max_steps: int = _setting(10, "number of steps to generate (each step adds one logical position)")
    mode: Mode = _setting(
        "isolated", "isolated: siblings cannot see each other; visible: later siblings see earlier ones", choices=MODES
    )
    max_parallel: int = _setting(8, "at most this many siblings per step (the most likely ones)")
    min_steps: int = _setting(0, "EOS gets probability 0 before this many steps")
    next_token_source: str = _setting(
        "mixture",
        "which sibling rows give the next distribution: their probability-"
        "weighted mixture, the top sibling's, or the last sibling's",
        choices=NEXT_TOKEN_SOURCES,
    )
    threshold_schedule: str | None = _setting(None, "vary the threshold over steps: bezier:FINAL[:P1:P2] or relu:FINAL:KNEE")
    chat: bool = _setting(False, "wrap the prompt in the tokenizer's chat template")
    pruning: PruningStrategy | None = _setting(None, "retroactive pruning strategy (config table [pruning])", flag=False)
    capture: CaptureSpec | None = _setting(None, "attention to keep per step (config table [capture])", flag=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.threshold_schedule, ThresholdSchedule):  # the schedule carries its own start
            set_(self, "threshold", self.threshold_schedule.start)
            set_(self, "threshold_schedule", self.threshold_schedule.to_text())
        set_(self, "threshold", check_threshold(self.threshold))
        set_(self, "max_steps", check_int(self.max_steps, "max_steps", 1))
        set_(self, "max_parallel", check_int(self.max_parallel, "max_parallel", 1, MAX_PARALLEL_LIMIT))
        set_(self, "min_steps", check_int(self.min_steps, "min_steps", 0))
        if self.min_steps > self.max_steps:
            raise InvalidInputError(
                f"min_steps ({self.min_steps}) is more than max_steps ({self.max_steps}); lower min_steps or raise max_steps"
            )
        check_choice(self.mode, "mode", MODES)
        check_choice(self.next_token_source, "next_token_source", NEXT_TOKEN_SOURCES)
        if self.threshold_schedule is not None and not isinstance(self.threshold_schedule, str):
            raise InvalidInputError(f"threshold_schedule must be text like bezier:0.3, got {self.threshold_schedule!r}")
        ThresholdSchedule.parse(self.threshold, self.threshold_schedule or None)
        if not isinstance(self.chat, bool):
            raise InvalidInputError(f"chat must be true or false, got {self.chat!r}")
        if isinstance(self.pruning, Mapping):
            set_(self, "pruning", pruning_from_mapping(self.pruning))
        if self.pruning is not None and not isinstance(self.pruning, (AttentionPruning, SimilarityPruning)):
            raise InvalidInputError(
                f"pruning must be AttentionPruning, SimilarityPruning or a settings table, got {self.pruning!r}"
            )
        set_(self, "capture", capture_from_value(self.capture))
        late = sorted(s for s in (self.capture.steps or []) if s >= self.max_steps) if self.capture else []
        if late:
            raise InvalidInputError(
                f"capture steps {late} are never reached with max_steps {self.max_steps} (steps 0..{self.max_steps - 1}); "
                "lower them or raise max_steps"
            )

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "the settings") -> GenerationConfig:
        """From plain values (a TOML table, JSON): unknown keys are named with a 'did you mean' hint."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{where} must be a table of settings, got {type(data).__name__}")
        reject_unknown(data, cls.keys(), where)
        return cls(**dict(data))

    def replace(self, **overrides: Any) -> GenerationConfig:
        """A copy with some settings changed (unknown names refused with a hint)."""
        reject_unknown(overrides, self.keys(), "the generation settings")
        return dataclasses.replace(self, **overrides)

    # ---- derived --------------------------------------------------------------------------
    @property
    def schedule(self) -> ThresholdSchedule:
        return ThresholdSchedule.parse(self.threshold, self.threshold_schedule or None)

    def to_dict(self) -> dict:
        """Plain values (JSON/TOML-ready); pruning and capture as their tables."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["pruning"] = None if self.pruning is None else self.pruning.describe()
        out["capture"] = None if self.capture is None else self.capture.to_dict()
        return out


def parse_setting_text(name: str, text: str) -> Any:
    """A CLI string as the field's type where it reads as one; otherwise the text, for the field's check to refuse."""
    kind = {f.name: f.type for f in dataclasses.fields(GenerationConfig)}[name]
    for parse, names in ((int, ("int", int)), (float, ("float", float))):
        if kind in names:
            try:
                return parse(text)
            except ValueError:
                return text
    return text
