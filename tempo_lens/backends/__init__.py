"""Everything that depends on the model's class, behind one interface (:class:`~.base.Backend`).

- ``bridge`` (:mod:`.bridge`): TransformerLens's ``TransformerBridge`` (TransformerLens 3.9 and 4.x), with
  its KV-cache shim and exact speed paths;
- ``hooked`` (:mod:`.hooked`): ``HookedTransformer`` and its subclasses, e.g. SAELens's
  ``HookedSAETransformer`` (TransformerLens 3.x);
- ``nnsight`` (:mod:`.nnsight`): an ``nnsight.LanguageModel`` around the Hugging Face model itself, TEMPO
  given as its inputs (``position_ids``, 4D float masks) instead of hook points (optional dependency).

:func:`backend_for` picks the backend of a model that a user built or :func:`tempo_lens.load_model`
loaded; :func:`load` boots one from a resolved folder or Hugging Face name.

May import: :mod:`tempo_lens.errors`, :mod:`tempo_lens.io`, :mod:`tempo_lens.layout` and
:mod:`tempo_lens.position_source` (the layers below); nothing above the model layer.
"""

from __future__ import annotations

from typing import Any, get_args

import torch

from ..errors import InvalidInputError
from .base import Backend, BackendName
from .bridge import BridgeBackend, is_bridge
from .bridge.loading import load_bridge
from .hooked import HookedBackend, is_hooked
from .hooked.loading import load_hooked
from .nnsight import NnsightBackend, is_nnsight
from .nnsight.loading import load_nnsight

BACKENDS: tuple[str, ...] = get_args(BackendName)


def backend_for(model: Any) -> Backend:
    """The backend serving ``model``; anything but a TransformerBridge or HookedTransformer is refused."""
    if is_bridge(model):
        return BridgeBackend(model)
    if is_hooked(model):
        return HookedBackend(model)
    if is_nnsight(model):
        return NnsightBackend(model)
    raise InvalidInputError(
        "tempo_lens needs a TransformerLens TransformerBridge or HookedTransformer, or an nnsight LanguageModel "
        f"(e.g. from tempo_lens.load_model()), got {type(model).__name__}"
    )


def as_backend(model: Any) -> Backend:
    """``model`` itself when it is already a :class:`Backend`, else :func:`backend_for` of it.

    For the public functions that take a model from a researcher and a resolved backend from tempo_lens's own
    entry points (which resolve it once per call).
    """
    return model if isinstance(model, Backend) else backend_for(model)


def model_of(model: Any) -> Any:
    """The model behind ``model``: a :class:`Backend`'s ``.model``, anything else as given."""
    return model.model if isinstance(model, Backend) else model


def check_backend_name(backend: Any) -> BackendName:
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend {backend!r} is not known; choose one of {', '.join(BACKENDS)}")
    return backend


def load(path: str, name: str, backend: BackendName, dtype: torch.dtype, device: str | None, device_map: Any) -> Any:
    """Boot the model at ``path`` (a folder or a Hugging Face name) as ``backend``'s model class."""
    if backend == "nnsight":
        return load_nnsight(path, name, dtype, device, device_map)
    if backend == "hooked":
        if device_map is not None:
            raise InvalidInputError(
                "device_map is supported by backends 'bridge' and 'nnsight'; pass device= for backend='hooked'"
            )

        return load_hooked(path, name, dtype, device or "cpu")

    return load_bridge(path, name, dtype, device, device_map)


__all__ = ["BACKENDS", "Backend", "BackendName", "as_backend", "backend_for", "check_backend_name", "load", "model_of"]
