"""Fixtures for the reliability tests: a short-context tiny model, the CLI in-process, folder snapshots."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "tempo-lens"
SHORT_CTX = 16


def build_short_context_model(directory: Path, n_ctx: int = SHORT_CTX, seed: int = 0) -> Path:
    """The tiny random Llama of tests/helpers.py with a context of only ``n_ctx`` positions."""
    from transformers import AutoModelForCausalLM

    from tests.helpers import _tokenizer, tiny_config

    config = tiny_config("llama")
    config.max_position_embeddings = n_ctx
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def short_ctx_dir(tmp_path_factory) -> Path:
    return build_short_context_model(tmp_path_factory.mktemp("short_ctx") / "llama16")


@pytest.fixture(scope="session")
def short_ctx_model(short_ctx_dir):
    from tempo_lens import load_model

    return load_model(str(short_ctx_dir), device="cpu")


@pytest.fixture
def no_forward(monkeypatch):
    """Fail the test if any model forward of a generation runs (refusals must come first)."""
    import tempo_lens.generation.batch as batch
    import tempo_lens.generation.single as single

    def forbidden(*args, **kwargs):
        raise AssertionError("a forward pass ran before the input was refused")

    for module in (single, batch):
        monkeypatch.setattr(module, "forward_step", forbidden)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model is loaded: inputs that do not depend on the model are refused before."""
    import tempo_lens.models.loading as model

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was refused")

    monkeypatch.setattr(model, "load_model", forbidden)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``tempo_lens.cli.main(argv)`` in-process: (exit status, stdout, stderr); argparse exits are caught."""
    from tempo_lens.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def assert_clean_refusal(rc: int, err: str, *fragments: str) -> str:
    """Non-zero exit, one ``error:`` line naming the problem, and no traceback."""
    assert rc != 0, f"expected a refusal, got exit 0; stderr: {err!r}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line, got {err!r}"
    message = errors[0]
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    return message


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) -> sha256, to prove nothing on disk was lost or changed."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def start_slow_run(folder: Path, model: Path, out: Path, max_steps: int, extra: str = ""):
    """``tempo-lens run --overwrite`` of eight prompts with four siblings per step (seconds long), stderr piped."""
    import subprocess

    prompts = ", ".join(f'"t1 t{10 + i} t{40 + i}"' for i in range(8))
    config = folder / "slow.toml"
    config.write_text(f'prompts = [{prompts}]\nmodel = "{model}"\nthreshold = 1e-6\nmax_parallel = 4\n'
                      f"max_steps = {max_steps}\n{extra}")
    return subprocess.Popen([str(CLI), "run", str(config), "--out", str(out), "--overwrite"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())


def dead_owner_tag() -> str:
    """``MACHINE-PID-START`` of a process of this machine that has ended (as temporary folder names carry it)."""
    import subprocess

    from tempo_lens.io.atomic import owner_tag

    child = subprocess.Popen([sys.executable, "-c", "from tempo_lens.io.atomic import owner_tag; print(owner_tag())"],
                             stdout=subprocess.PIPE, text=True, env=subprocess_env())
    tag = child.communicate(timeout=60)[0].strip()
    assert tag.split("-")[0] == owner_tag().split("-")[0] and child.returncode == 0
    return tag


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=str(REPO))
    env.update(extra)
    return env
