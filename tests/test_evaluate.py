"""``labelwatch evaluate``: noise injected into a trusted labelled file, scored against what it corrupted."""

from __future__ import annotations

import re
import subprocess
import sys

import orjson

from consumer.demo.datasets import load


def test_evaluate_scores_labelwatch_and_cleanlab_on_injected_noise(tmp_path):
    data = load("digits")
    path = tmp_path / "trusted.jsonl"
    with path.open("wb") as out:
        for i in range(1200):
            out.write(orjson.dumps({"sample_id": f"d{i}", "label": data.class_names[data.labels[i]],
                                    "embedding": data.vectors[i].tolist()}) + b"\n")
        out.write(b"{not json\n")
    done = subprocess.run([sys.executable, "-m", "consumer", "evaluate", str(path), "--seeds", "2", "--noise", "0.1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "1200 samples, 10 labels, 64-d; 1 invalid lines skipped" in out
    rows = re.findall(r"\| (\d) \| (labelwatch|cleanlab \(batch\)) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", out)
    assert {(seed, method) for seed, method, *_ in rows} == {(s, m) for s in "01" for m in ("labelwatch", "cleanlab (batch)")}
    for seed, method, precision, recall, f1, review, auprc in rows:
        assert float(f1) > 0.6, out  # digits with 10% noise: both methods find most of the corrupted labels
        assert 0.05 < float(review) < 0.3, out
    assert re.search(r"mean F1 labelwatch: 0\.\d+", out) and re.search(r"mean F1 cleanlab: 0\.\d+", out)


def test_evaluate_refuses_a_file_without_valid_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"nope\n")
    done = subprocess.run([sys.executable, "-m", "consumer", "evaluate", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "no valid AnnotatedSample line" in done.stderr
