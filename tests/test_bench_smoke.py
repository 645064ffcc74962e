"""Smoke test of the throughput benchmark: ``bench/throughput.py --quick`` runs and reports ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| (Vectors|Texts) .*\| ([0-9][0-9.,]*) \|$", re.MULTILINE)


@pytest.mark.kafka
def test_quick_benchmark_writes_both_ratios(tmp_path):
    out = tmp_path / "b.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "throughput.py"), "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    assert "<!-- throughput:start -->" in text and "<!-- throughput:end -->" in text
    assert "bench/throughput.py --quick --out" in text  # the exact command is recorded
    ratios = {path: float(value.replace(",", "")) for path, value in ROW.findall(text)}
    assert set(ratios) == {"Vectors", "Texts"}, text
    assert all(ratio > 0 for ratio in ratios.values()), ratios


def test_quick_embedding_batch_benchmark_writes_a_row_per_batch_size(tmp_path):
    out = tmp_path / "b.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "embedding_batch.py"), "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    assert "<!-- embedding-batch:start -->" in text and "bench/embedding_batch.py --quick --out" in text
    rows = re.findall(r"^\| (\d+)(?: \(default\))? \| ([0-9.,]+) \(.*\| ([0-9.,]+) \(", text, re.MULTILINE)
    assert [int(batch) for batch, _, _ in rows] == [16, 64], text
    assert all(float(a.replace(",", "")) > 0 and float(b.replace(",", "")) > 0 for _, a, b in rows), rows
