"""Saved attention arrays (``attention.npz``) read only as the metadata says they must be.

The caller names every array and its exact shape (derived from the layout in the metadata); float32,
C order. Before anything is decompressed, the archive must hold exactly those members, each declaring
exactly that shape and dtype, with a declared size that matches the shape and that deflate can
produce from its compressed bytes (at most :data:`MAX_DEFLATE_RATIO` : 1), and all of them together
must fit in half the available memory. So a re-signed archive cannot make a load allocate more than
its metadata, checked against the machine, allows; an ``.npy`` (or anything else) saved under the
name is refused; nothing is unpickled. :class:`ArraysOnDisk` reads them one at a time instead, each
when it is used and with the same checks, so memory holds the array in use rather than the archive.
"""

from __future__ import annotations

import math
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ExperimentFileError, describe

MAX_DEFLATE_RATIO = 1032  # deflate's largest possible expansion
MAX_NPY_HEADER = 65536 + 16
RECENT_BYTES = 64 * 2**20  # arrays kept after a read from disk, per archive (ArraysOnDisk)
DTYPE = np.dtype("<f4")


def _available_bytes() -> int:
    import torch  # deferred: torch (reading saved arrays needs no torch until memory is checked)

    from .memory import available_bytes  # deferred with torch

    return available_bytes(torch.device("cpu"))


def read_arrays(path: Path, shapes: Mapping[str, tuple[int, ...]], fix: str) -> dict[str, np.ndarray]:
    """The float32 arrays ``name -> shape`` of the ``.npz`` at ``path``, or a refusal naming the file and array."""
    _check_fits(path, sum(math.prod(shape) for shape in shapes.values()) * DTYPE.itemsize, "", fix)
    archive = _open(path, path, fix)
    with archive:
        members = _members(archive, path, shapes, fix)
        return {
            name: _read_member(archive, members[name], tuple(shape), f"{path} array {name!r}", fix)
            for name, shape in shapes.items()
        }


class ArraysOnDisk:
    """The arrays of one ``.npz`` read when asked for, so an archive larger than memory can be used.

    ``handle`` is the archive opened (and checksummed) by the caller; it stays open while this object lives, so what
    is read is what was checked even if the folder is replaced meanwhile. Each read is checked as :func:`read_arrays`
    checks it; the arrays read last are kept up to :data:`RECENT_BYTES`, since analyses read a step several times in a row.
    """

    def __init__(self, handle: BinaryIO, path: Path, shapes: dict[str, tuple[int, ...]], fix: str):
        weakref.finalize(self, handle.close)
        _check_fits(path, max((math.prod(shape) for shape in shapes.values()), default=0) * DTYPE.itemsize, " in one array", fix)
        self.archive = _open(handle, path, fix)
        self.members = _members(self.archive, path, shapes, fix)
        self.shapes, self.path, self.fix = shapes, path, fix
        self.recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self.recent_bytes = 0

    def read(self, name: str) -> np.ndarray:
        if name in self.recent:
            self.recent.move_to_end(name)
            return self.recent[name]
        where = f"{self.path} array {name!r}"
        array = _read_member(self.archive, self.members[name], tuple(self.shapes[name]), where, self.fix)
        self.recent[name] = array
        self.recent_bytes += array.nbytes
        while self.recent_bytes > RECENT_BYTES and len(self.recent) > 1:
            self.recent_bytes -= self.recent.popitem(last=False)[1].nbytes
        return array


class StepsOnDisk(Mapping[int, np.ndarray]):
    """One run's captured steps (``step -> [layers, batch, heads, queries, keys]``), each read from disk when used."""

    def __init__(self, arrays: ArraysOnDisk, names: dict[int, str]):
        self.arrays, self.names = arrays, names

    def __getitem__(self, step: int) -> np.ndarray:
        return self.arrays.read(self.names[step])

    def __iter__(self) -> Iterator[int]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _check_fits(path: Path, need: int, where: str, fix: str) -> None:
    """Refuse arrays the metadata describes beyond half the free memory, before anything is decompressed."""
    free = _available_bytes()
    if need > free // 2:
        raise ExperimentFileError(
            f"{path}: its metadata describes {need / 2**30:.1f} GiB of attention arrays{where}, more than half the "
            f"{free / 2**30:.1f} GiB of free memory; load it on a machine with more memory, or {fix}"
        )


def _open(source: Path | BinaryIO, path: Path, fix: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ExperimentFileError(f"{path} is not an .npz archive of arrays ({describe(exc)}); {fix}") from None


def _members(archive: zipfile.ZipFile, path: Path, shapes: Mapping[str, tuple[int, ...]], fix: str) -> dict[str, zipfile.ZipInfo]:
    """Each wanted array's member, by array name; an archive holding other members, or missing one, is refused."""
    members = {info.filename: info for info in archive.infolist()}
    wanted = {f"{name}.npy" for name in shapes}
    if set(members) != wanted:
        extra, missing = sorted(set(members) - wanted), sorted(wanted - set(members))
        raise ExperimentFileError(
            f"{path} does not hold the arrays its metadata lists (missing {missing[:3]}, unexpected {extra[:3]}); {fix}"
        )
    return {name: members[f"{name}.npy"] for name in shapes}


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
        raise ExperimentFileError(f"{where} is unreadable ({describe(exc)}); {fix}") from None
    if got != nbytes:
        raise ExperimentFileError(f"{where} is truncated ({got} of {nbytes} bytes); {fix}")
    return array
