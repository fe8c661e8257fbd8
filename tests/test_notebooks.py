"""The tutorial notebooks run end to end on the embedded model (nbclient, the venv's ``python3`` kernel).

Every notebook runs headless with ``TEMPO_LENS_NOTEBOOK_MAX_STEPS`` = :data:`CI_MAX_STEPS` (each reads it for
its number of generation steps). Notebook 5 needs TransformerLens 3.9 and SAELens: it runs in ``.venv-tl3``
(``make test`` runs it there) and is skipped elsewhere. Notebooks 1, 3 and 4 only read (4 on the default model here); they run with ``notebooks/`` as working directory. Notebook 2 runs in a
temporary copy of the tree it needs (``notebooks/`` beside ``analyses/exp1_*.toml``, no ``analyses/runs``),
so it always takes the path that runs the exp1 experiments itself, reloads them from files, and nothing is
written into the repository. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_tempo_generation", "02_attention_analysis", "03_interventions", "04_circuits_across_siblings",
         "05_hooked_transformer_sae")
CELL_TIMEOUT_S = 300
CI_MAX_STEPS = "4"

pytestmark = pytest.mark.slow


def read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def execute(notebook, workdir: Path) -> None:
    """Run every cell; a cell that raises fails the test with the cell's traceback (CellExecutionError)."""
    # First, a cell proving the kernel is this interpreter's environment (the venv), not another Python.
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix"))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TEMPO_LENS_NOTEBOOK_MAX_STEPS", CI_MAX_STEPS)  # the kernel inherits the environment
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    errors = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, errors


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    notebook = read(name)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"


def test_heatmap_step_is_one_variable():
    sources = [cell.source for cell in read("02_attention_analysis").cells if cell.cell_type == "code"]
    assert sum(line.strip() == "STEP = 3" for source in sources for line in source.splitlines()) == 1


@pytest.mark.parametrize("name", ["01_tempo_generation", "03_interventions", "04_circuits_across_siblings"])
def test_notebook_runs(name, monkeypatch):
    monkeypatch.delenv("TEMPO_LENS_NOTEBOOK_MODEL", raising=False)  # every notebook uses the default model unless the reader picks one
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    execute(read(name), NOTEBOOKS)
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "the notebook wrote files into notebooks/"


def test_hooked_sae_notebook_runs(monkeypatch):
    pytest.importorskip("sae_lens", reason="notebook 5 needs SAELens and TransformerLens 3.9: make test runs it in .venv-tl3")
    monkeypatch.delenv("TEMPO_LENS_NOTEBOOK_SAE", raising=False)  # the notebook's own random SAE, saved and loaded
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    execute(read("05_hooked_transformer_sae"), NOTEBOOKS)
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "the notebook wrote files into notebooks/"


def test_attention_notebook_runs_the_experiments_when_absent(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "analyses").mkdir()
    for name in ("exp1_isolated", "exp1_visible"):  # the same experiments with CI's number of steps
        config = (ROOT / "analyses" / f"{name}.toml").read_text()
        assert config.count("\nmax_steps = 10\n") == 1, "exp1 sets max_steps = 10 on a line of its own"
        (tmp_path / "analyses" / f"{name}.toml").write_text(config.replace("\nmax_steps = 10\n", f"\nmax_steps = {CI_MAX_STEPS}\n"))
    execute(read("02_attention_analysis"), tmp_path / "notebooks")
    from tempo_lens.experiment import load_experiment

    for name in ("exp1_isolated", "exp1_visible"):
        experiment = load_experiment(tmp_path / "analyses" / "runs" / name)
        assert {r.meta.get("variant") for r in experiment.runs} == {"generated", "unique_positions", "toggled_mask"}
    assert (tmp_path / "analyses" / ".tempo-lens-analyze.json").is_file()  # recorded, so `make analyze` may replace them
