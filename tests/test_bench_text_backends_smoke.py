"""Smoke test of the text-backends benchmark: ``bench/text_backends.py --quick --no-write`` runs every
backend on the same texts and reports how close each one's embeddings are to torch's."""

from __future__ import annotations

import re

from bench_helpers import run_bench

ROW = re.compile(r"^\| (torch|onnx \(default\)|onnx-int8) \| ([0-9.]+) \| ([0-9.]+) \([^)]*\) \| ([0-9.]+) \| ([0-9.]+) \|",
                 re.MULTILINE)


def test_quick_text_backends_benchmark_compares_every_backend_with_torch(tmp_path):
    out = tmp_path / "benchmarks.md"
    stdout = run_bench("text_backends.py", "--quick", "--no-write", "--out", str(out), timeout=300)
    rows = {name: tuple(map(float, values)) for name, *values in ROW.findall(stdout)}
    assert set(rows) == {"torch", "onnx (default)", "onnx-int8"}, stdout[-4000:]
    assert rows["torch"][1:] == (1.0, 1.0, 1.0)  # the reference: ratio and cosines against itself
    _, _, mean, low = rows["onnx (default)"]
    assert mean >= 0.9999 and low >= 0.9999  # the exported fp32 model gives torch's embeddings
    _, _, mean, low = rows["onnx-int8"]
    assert 0.97 < mean < 1.0 and 0.9 < low <= mean  # quantized: close, not equal
    assert all(texts_per_s > 0 for texts_per_s, *_ in rows.values())
    assert not out.exists()  # --no-write writes nothing
