"""README "Your own model code", its TransformerLens part: every python block, in order, in one session (TransformerLens 3.x + sae-lens)."""

from __future__ import annotations

import pytest

from tests.test_hook_examples import readme_blocks

HEADING = "## Your own model code"
NNSIGHT = "### nnsight"  # its own blocks run in tests/backends/nnsight/test_readme.py


@pytest.mark.slow
def test_readme_blocks_run_as_pasted(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sae_lens", reason="sae-lens is installed in .venv-tl3 (make test runs this there)")
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        pytest.skip("HookedTransformer needs TransformerLens 3.x")
    blocks = [block for block in readme_blocks(HEADING) if block not in readme_blocks(NNSIGHT)]
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "True" in out.splitlines()  # the self-booted bridge generates the same text as the hooked model
    assert "latent" in out and "difference" in out
    assert "RMSPre" in out  # hooked_from_folder folded the norms
    assert (tmp_path / "latent.html").stat().st_size > 1000 and (tmp_path / "latents_on_lattice.html").stat().st_size > 1000
