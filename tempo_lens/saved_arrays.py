"""Saved attention arrays (``attention.npz``) read only as the metadata says they must be.

The caller names every array and its exact shape (derived from the layout in the metadata); float32,
C order. Before anything is decompressed, the archive must hold exactly those members, each declaring
exactly that shape and dtype, with a declared size that matches the shape and that deflate can
produce from its compressed bytes (at most :data:`MAX_DEFLATE_RATIO` : 1), and all of them together
must fit in half the available memory. So a re-signed archive cannot make a load allocate more than
its metadata, checked against the machine, allows; an ``.npy`` (or anything else) saved under the
name is refused; nothing is unpickled.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import ExperimentFileError

MAX_DEFLATE_RATIO = 1032  # deflate's largest possible expansion
MAX_NPY_HEADER = 65536 + 16
DTYPE = np.dtype("<f4")


def _available_bytes() -> int:
    import torch

    from .generation.memory import available_bytes

    return available_bytes(torch.device("cpu"))


def read_arrays(path: Path, shapes: Mapping[str, tuple[int, ...]], fix: str) -> dict[str, np.ndarray]:
    """The float32 arrays ``name -> shape`` of the ``.npz`` at ``path``, or a refusal naming the file and array."""
    need = sum(math.prod(shape) for shape in shapes.values()) * DTYPE.itemsize
    free = _available_bytes()
    if need > free // 2:
        raise ExperimentFileError(
            f"{path}: its metadata describes {need / 2**30:.1f} GiB of attention arrays, more than half the "
            f"{free / 2**30:.1f} GiB of free memory; load it on a machine with more memory, or {fix}"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ExperimentFileError(f"{path} is not an .npz archive of arrays ({exc}); {fix}") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        wanted = {f"{name}.npy" for name in shapes}
        if set(members) != wanted:
            extra, missing = sorted(set(members) - wanted), sorted(wanted - set(members))
            raise ExperimentFileError(
                f"{path} does not hold the arrays its metadata lists (missing {missing[:3]}, unexpected {extra[:3]}); {fix}"
            )
        arrays = {}
        for name, shape in shapes.items():
            info = members[f"{name}.npy"]
            arrays[name] = _read_member(archive, info, tuple(shape), f"{path} array {name!r}", fix)
    return arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...], where: str, fix: str) -> np.ndarray:
    nbytes = math.prod(shape) * DTYPE.itemsize
    if not 0 < info.file_size - nbytes <= MAX_NPY_HEADER:
        raise ExperimentFileError(f"{where} declares {info.file_size} bytes, but shape {shape} needs {nbytes}; {fix}")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1):
        raise ExperimentFileError(f"{where} declares more bytes than its compressed data can hold; {fix}")
    try:
        with archive.open(info) as handle:
            assert isinstance(handle, zipfile.ZipExtFile)  # what ZipFile.open reads with (a buffered reader)
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            declared, fortran, dtype = reader(handle)
            if tuple(declared) != shape or dtype != DTYPE or fortran:
                raise ExperimentFileError(
                    f"{where} is {dtype} of shape {tuple(declared)}{' (Fortran order)' if fortran else ''}; "
                    f"its metadata says float32 of shape {shape}; {fix}"
                )
            array = np.empty(shape, dtype=DTYPE)
            view = array.data.cast("B")
            got = 0
            while got < nbytes:
                n = handle.readinto(view[got:])
                if not n:
                    break
                got += n
    except ExperimentFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ExperimentFileError(f"{where} is unreadable ({exc}); {fix}") from None
    if got != nbytes:
        raise ExperimentFileError(f"{where} is truncated ({got} of {nbytes} bytes); {fix}")
    return array
