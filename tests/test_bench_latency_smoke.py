"""Smoke test of the latency benchmark: ``bench/latency.py --quick`` runs and reports percentiles."""

from __future__ import annotations

import re

import pytest

from bench_helpers import run_bench


@pytest.mark.kafka
def test_quick_latency_benchmark_reports_a_verdict_for_every_sample(tmp_path):
    out = tmp_path / "b.md"
    run_bench("latency.py", "--quick", "--out", str(out), timeout=170)
    text = out.read_text(encoding="utf-8")
    assert "<!-- latency:start -->" in text and "bench/latency.py --quick --out" in text
    row = re.search(r"^\| 100 \| \? \| verdict \(every sample\) \| ([0-9,]+) \| ([0-9.]+) \| [0-9.]+ \| ([0-9.]+) \|",
                    text, re.M)
    assert row, text
    assert int(row.group(1).replace(",", "")) == 500, "every sample produced one first verdict"
    assert 0 < float(row.group(2)) <= float(row.group(3))
