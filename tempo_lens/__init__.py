"""tempo_lens: TEMPO (parallel tokens at shared positions) through TransformerLens hook points."""

from .model import load_model

__all__ = ["load_model"]
__version__ = "0.1.0"
