"""Sibling identity resolves through the layout; reader rows follow the generation's next-token source."""

from __future__ import annotations

import pytest

from tempo_lens.errors import InvalidInputError
from tempo_lens.layout import TokenLayout
from tempo_lens.siblings import Sibling, output_rows, physical_indices, reader_rows, run_view, siblings


def layout() -> TokenLayout:
    lay = TokenLayout.from_prompt([1, 2, 3])  # physical 0..2
    lay.append_step([4, 5], [0.6, 0.2])  # step 0: 3, 4
    lay.append_step([6], [0.9])  # step 1: 5
    lay.append_step([7, 8, 9], [0.4, 0.3, 0.1])  # step 2: 6, 7, 8
    return lay


def test_physical_index_and_rank():
    lay = layout()
    assert [lay.physical_index(2, r) for r in range(3)] == [6, 7, 8]
    assert lay.physical_index(-1, 2) == 2 and [lay.rank_of(i) for i in (2, 4, 5, 8)] == [2, 1, 0, 2]
    with pytest.raises(IndexError):
        lay.physical_index(1, 1)


def test_siblings_and_where():
    lay = layout()
    view = run_view(lay)
    assert siblings(view, [0]) == [Sibling(0, 0, 4, "<4>"), Sibling(0, 1, 5, "<5>")]
    assert physical_indices(lay, [Sibling(2, 1, 8, "x"), (0, 1), 1, -1]) == [0, 1, 2, 4, 5, 7]
    with pytest.raises(InvalidInputError, match="token 8 but"):
        Sibling(2, 2, 8, "x").index(lay)
    assert Sibling(3, 1, 9, "\n").label == "s3.1 ⏎"


def test_reader_rows():
    lay = layout()
    assert reader_rows(lay, 0) == ([2], [1.0])
    rows, weights = reader_rows(lay, 1)
    assert rows == [3, 4] and weights == pytest.approx([0.75, 0.25])
    assert reader_rows(lay, 1, "top") == ([3], [1.0]) and reader_rows(lay, 1, "last") == ([4], [1.0])
    assert output_rows(lay, 2, "mixture")[0] == [6, 7, 8]
    with pytest.raises(InvalidInputError):
        reader_rows(lay, 3)


def test_run_view_reads_settings_from_the_result_its_config_or_meta():
    from types import SimpleNamespace

    lay = layout()
    strings = [f"t{i}" for i in range(len(lay))]
    on_config = SimpleNamespace(layout=lay, token_strings=strings, config=SimpleNamespace(next_token_source="top", mode="visible"))
    in_meta = SimpleNamespace(layout=lay, token_strings=strings, meta={"next_token_source": "last"}, mode="visible", name="saved")
    assert (run_view(on_config).next_token_source, run_view(on_config).mode) == ("top", "visible")
    assert (run_view(in_meta).next_token_source, run_view(in_meta).name) == ("last", "saved")
    with pytest.raises(InvalidInputError, match="expected a GenerationResult"):
        run_view(object())
