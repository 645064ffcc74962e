"""Smoke test of the backfill benchmark: ``bench/backfill.py --quick`` runs both sides and reports them."""

from __future__ import annotations

import re

from bench_helpers import run_bench


def test_quick_backfill_benchmark_times_both_sides(tmp_path):
    out = tmp_path / "b.md"
    run_bench("backfill.py", "--quick", "--out", str(out), timeout=300)
    text = out.read_text(encoding="utf-8")
    assert "<!-- backfill:start -->" in text and "bench/backfill.py --quick --out" in text
    rows = re.findall(r"^\| (`labelwatch audit`|cleanlab batch)[^|]*\| ([0-9.]+) \| [0-9,]+ \| ([0-9,]+) \| ([0-9,]+) \|$",
                      text, re.M)
    assert len(rows) == 2, text
    for _, wall, rss, flagged in rows:
        assert float(wall) > 0 and int(rss.replace(",", "")) > 50 and int(flagged.replace(",", "")) > 0
