"""README "Your own model code", its nnsight part: every python block, in order, in one session."""

from __future__ import annotations

import pytest

from tests.test_hook_examples import readme_blocks


@pytest.mark.slow
def test_readme_nnsight_blocks_run_as_pasted(embedded_nnsight, monkeypatch, tmp_path, capsys):
    import tempo_lens

    blocks = readme_blocks("### nnsight")
    assert len(blocks) == 1 and blocks[0].lstrip().startswith("import tempo_lens")
    monkeypatch.setattr(tempo_lens, "load_model", lambda *args, **kwargs: embedded_nnsight)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.startswith("The cat sat on the") and "{0: " in out
