"""The clicked object's details (explorer/cards.py): key columns by title first, the rest folded in families."""
from __future__ import annotations

import re

import numpy as np

from explorer.cards import column_groups, detail_html


def test_columns_fold_into_families_and_nothing_is_lost():
    columns = ["redshift_err", "truth_type", "truth_bar", "truth_sersic_index", "gz2_a_count", "gz2_b_count",
               "gz2_total_votes", "odd_one", "x_1", "x_2"]
    groups = column_groups(columns)
    assert [g[0] for g in groups] == ["Simulation truth", "Galaxy Zoo 2 votes", "Other columns"]
    assert sorted(c for _, _, members in groups for c in members) == sorted(columns)


def test_details_show_key_columns_by_title_first_and_fold_the_rest(small_bundle, monkeypatch):
    from explorer.data import load_explorer_data

    data = load_explorer_data(small_bundle)
    catalog = data.catalog.copy()
    for k in range(40):   # a catalogue with many raw columns, as the simulated surveys write
        catalog[f"truth_param_{k}"] = np.arange(len(catalog), dtype=float)
    catalog["<b>odd</b>"] = "<script>alert(1)</script>"
    monkeypatch.setattr(data, "catalog", catalog)
    card = detail_html(data, 5)
    top = card.split("<details", 1)[0]
    assert "GZ2 smooth fraction" in top and "Redshift" in top and "Object id" in top
    assert "truth_param" not in top and "param 7" not in top
    assert len(re.findall("<tr>", top)) <= 15, "the unfolded part stays short"
    assert card.count("<details") == 2 and "Simulation truth" in card and "(40)" in card
    assert "param 39" in card, "every column is still there, folded"
    assert "<script>" not in card and "&lt;b&gt;odd&lt;/b&gt;" in card
