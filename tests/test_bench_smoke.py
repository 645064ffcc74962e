"""Smoke tests of the benchmarks: ``--quick`` runs finish and write their section of the report."""

from __future__ import annotations

import re

import pytest

from bench_helpers import run_bench

ROW = re.compile(r"^\| (Vectors|Texts) .*\| ([0-9][0-9.,]*) \|$", re.MULTILINE)


def run_quick(script: str, out) -> str:
    """``bench/SCRIPT --quick --out OUT``; the markdown it wrote, which records that exact command."""
    run_bench(script, "--quick", "--out", str(out), timeout=110)
    text = out.read_text(encoding="utf-8")
    assert f"bench/{script} --quick --out" in text
    return text


@pytest.mark.kafka
def test_quick_benchmark_writes_both_ratios(tmp_path):
    text = run_quick("throughput.py", tmp_path / "b.md")
    assert "<!-- throughput:start -->" in text and "<!-- throughput:end -->" in text
    ratios = {path: float(value.replace(",", "")) for path, value in ROW.findall(text)}
    assert set(ratios) == {"Vectors", "Texts"}, text
    assert all(ratio > 0 for ratio in ratios.values()), ratios


def test_quick_embedding_batch_benchmark_writes_a_row_per_batch_size(tmp_path):
    text = run_quick("embedding_batch.py", tmp_path / "b.md")
    assert "<!-- embedding-batch:start -->" in text
    rows = re.findall(r"^\| (\d+)(?: \(default\))? \| ([0-9.,]+) \(.*\| ([0-9.,]+) \(", text, re.MULTILINE)
    assert [int(batch) for batch, _, _ in rows] == [16, 64], text
    assert all(float(a.replace(",", "")) > 0 and float(b.replace(",", "")) > 0 for _, a, b in rows), rows
