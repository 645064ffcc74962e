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


def test_floors_add_up_to_the_ceilings_they_print():
    out = run_bench("floors.py", "--samples", "1500", "--repeats", "2", "--bare-rate", "25000", timeout=110)
    number = r"([0-9][0-9.,]*)"
    product, per_sample, searched, eigen, floor = (float(v.replace(",", "")) for v in re.search(
        rf"product over 10,000 stored rows {number} ms × {number} full searches per sample = {number} ms; "
        rf"the shrinkage choice's 5 eigendecompositions {number} ms; together {number} ms", out).groups())
    assert per_sample >= 1.0  # each sample is searched in full at least once (judged, or the first step once learned)
    # (each figure is printed rounded: the product to 0.05 ms, the searches per sample to 0.005)
    assert abs(product * per_sample - searched) <= 0.005 * product + 0.05 * per_sample + 0.05, out
    assert abs(searched + eigen - floor) <= 0.15, out
    ceiling = float(re.search(rf"everything else free: {number} samples/s", out).group(1).replace(",", ""))
    assert abs(ceiling - 500_000 / floor) <= 0.01 * ceiling, out
    rate, ratio = re.search(rf"at most {number} samples/s, a ratio of at most {number}", out).groups()
    assert abs(float(ratio) - 20 / (20 + floor)) <= 0.002, out  # 500 at 25,000/s: 20 ms
    assert abs(float(rate.replace(",", "")) - 500_000 / (20 + floor)) <= 0.01 * float(rate.replace(",", "")), out
