"""The tiny random models of the harness, built once per session, and the backends this environment can run.

A backend is a name that ``tempo_lens.load_model(path, backend=NAME)`` accepts: every name in
``tempo_lens.backends.BACKENDS`` (and any listed in ``TEMPO_FUZZ_BACKENDS``) is tried once on a tiny model,
and the ones that load are drawn. A new backend (e.g. ``"nnsight"``) joins by being added to
``BACKENDS``; nothing here names the model classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tests.helpers import build_tiny_model, tiny_config

FAMILIES = (
    "llama",
    "llama3_scaling",
    "qwen2",
    "gemma3",
    "gpt2",
)  # RoPE + GQA, llama3 RoPE scaling, biases, two bases + windows, learned positions
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FAST_SETTINGS = (None, False)  # the backend's default speed paths, and none


@dataclass(frozen=True)
class FamilyShape:
    """What the draws need to know of a family: its layers, context, sliding window and position kind."""

    n_layers: int
    n_ctx: int
    window: int | None
    learned_positions: bool


def family_shape(family: str) -> FamilyShape:
    config = tiny_config(family)
    if family == "gpt2":
        return FamilyShape(config.n_layer, config.n_positions, None, True)
    window = (
        getattr(config, "sliding_window", None) if "sliding_attention" in (getattr(config, "layer_types", None) or []) else None
    )
    return FamilyShape(config.num_hidden_layers, config.max_position_embeddings, window, False)


def candidate_backends() -> list[str]:
    """Every backend name tempo_lens knows, or the comma-separated ``TEMPO_FUZZ_BACKENDS``."""
    chosen = os.environ.get("TEMPO_FUZZ_BACKENDS", "").strip()
    if chosen:
        return [name.strip() for name in chosen.split(",") if name.strip()]
    from tempo_lens.backends import BACKENDS

    return list(BACKENDS)


class ModelShelf:
    """Tiny models on disk, their loaded instances per (family, backend, dtype, fast), and HF eager oracles.

    A plain class with a short repr: hypothesis prints the test's arguments with a failing case.
    """

    def __init__(self, root: Path):
        self.root = root
        self._dirs: dict[str, Path] = {}
        self._models: dict[tuple, Any] = {}
        self._oracles: dict[tuple, Any] = {}
        self.unavailable: dict[str, str] = {}  # backend name: why it does not load here
        self.backends: list[str] = []

    def __repr__(self) -> str:
        return f"ModelShelf(backends={self.backends})"

    def directory(self, family: str) -> Path:
        if family not in self._dirs:
            self._dirs[family] = build_tiny_model(family, self.root / family)
        return self._dirs[family]

    def model(self, family: str, backend: str, dtype: str = "float32", fast: bool | None = None) -> Any:
        key = (family, backend, dtype, fast)
        if key not in self._models:
            from tempo_lens import load_model

            self._models[key] = load_model(str(self.directory(family)), backend=backend, device="cpu", dtype=dtype, fast=fast)
        return self._models[key]

    def oracle(self, family: str, dtype: str = "float32") -> Any:
        """Hugging Face eager attention on the same weights (``position_ids`` and a 4D float mask are passed per call)."""
        key = (family, dtype)
        if key not in self._oracles:
            from transformers import AutoModelForCausalLM

            self._oracles[key] = AutoModelForCausalLM.from_pretrained(
                self.directory(family), attn_implementation="eager", dtype=DTYPES[dtype]
            ).eval()
        return self._oracles[key]

    def find_backends(self) -> list[str]:
        """The candidate backends that load a tiny model here; the others go to ``unavailable`` with the reason."""
        for name in candidate_backends():
            try:
                self.model("llama", name)
            except Exception as exc:  # noqa: BLE001 - any failure to load means: not in this environment
                self.unavailable[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            else:
                self.backends.append(name)
        return self.backends
