"""Smoke test of the memory benchmark: ``bench/memory.py --quick --no-write`` runs and reports an RSS ratio."""

from __future__ import annotations

import re

from bench_helpers import run_bench

RATIO = re.compile(r"^RSS ratio (\S+): ([0-9]+\.[0-9]+) \(target <= 1\.10: (met|NOT met)\)$", re.MULTILINE)


def test_quick_memory_benchmark_reports_a_ratio(tmp_path):
    out = tmp_path / "benchmarks.md"
    stdout = run_bench("memory.py", "--quick", "--no-write", "--out", str(out), timeout=55)
    found = RATIO.findall(stdout)
    assert found, stdout[-4000:]
    span, ratio, _ = found[-1]
    assert span == "6k/2k"
    assert 0.5 < float(ratio) < 20, ratio
    assert "| 6,000 |" in stdout and "| 2,000 |" in stdout  # both checkpoints in the table
    assert not out.exists()  # --no-write writes nothing
