"""The viewer page alone: which layout each table gets, and text that cannot break out of the page's data."""

from __future__ import annotations

import json

import polars as pl
import pytest

from resources.storage.viewer import page_kind, render_page

TEXT = {"instruction": ["a"], "response": ["b"]}


@pytest.mark.parametrize(("columns", "kind"), [
    ({"prompt_id": ["p"], "chosen": ["x"], "rejected": ["y"], "margin": [0.1]}, "pairs"),
    ({"verdict": ["ok"], "raw_output": ["r"], **TEXT}, "synthesis"),
    ({"influence": [0.1], "loss_after": [1.0], **TEXT}, "influence"),
    ({"teacher_version": ["t"], **TEXT}, "dataset"),
    ({"heldout_loss": [1.0]}, "table"),
])
def test_layout_follows_the_columns(columns: dict, kind: str) -> None:
    assert page_kind(pl.DataFrame(columns)) == kind


def test_texts_stay_data() -> None:
    hostile = "</script><script>alert(1)</script><!--"
    table = pl.DataFrame({"verdict": ["ok"], "raw_output": [hostile], "instruction": ["x"], "response": ["y"],
                          "seed_ids": [["s1", "s2"]]})
    page = render_page(table, "t <b>", {"asset": "synthetic_instructions", "path": "<i>p</i>"})
    data = page[page.index('<script id="data" type="application/json">') + 42: page.index("</script>\n<script>")]
    assert "<" not in data
    decoded = json.loads(data)
    assert decoded["rows"][0]["raw_output"] == hostile and decoded["rows"][0]["seed_ids"] == '["s1", "s2"]'
    assert "<title>t &lt;b&gt;</title>" in page and "&lt;i&gt;p&lt;/i&gt;" in page
    with pytest.raises(ValueError, match="unknown viewer page kind"):
        render_page(table, "t", {}, kind="chart")
