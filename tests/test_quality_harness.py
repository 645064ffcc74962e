"""The detection-quality harness ``bench/quality.py``: its metric helpers and a smoke run on digits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.quality import auprc, detection_metrics  # noqa: E402


def test_detection_metrics_on_a_hand_computed_example():
    # flagged a b c d; corrupted a b e  ->  tp 2, precision 2/4, recall 2/3, F1 = 2*(1/2)(2/3)/(1/2+2/3) = 4/7
    m = detection_metrics({"a", "b", "c", "d"}, {"a", "b", "e"}, n=10)
    assert (m["tp"], m["n_flagged"], m["n_corrupted"]) == (2, 4, 3)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["review_fraction"] == pytest.approx(0.4)


def test_detection_metrics_when_nothing_is_caught():
    assert detection_metrics(set(), {"a"}, n=5)["f1"] == 0.0
    m = detection_metrics({"b"}, {"a"}, n=5)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_auprc_on_a_hand_computed_example():
    # ranking a(+) b(-) c(+) d(-): precision at the two positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2 = 5/6
    ids = ["a", "b", "c", "d"]
    assert auprc({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}, {"a", "c"}, ids) == pytest.approx(5 / 6)
    # a perfect ranking scores 1; a missing score counts as 0 (ranked last)
    assert auprc({"a": 0.9, "c": 0.8}, {"a", "c"}, ids) == pytest.approx(1.0)


def test_harness_runs_on_digits_with_the_cleanlab_baseline(tmp_path):
    out = tmp_path / "q.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "quality.py"), "--datasets", "digits", "--settings", "uniform10",
         "--no-write", "--json-out", str(out), "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "| digits | uniform10 |" in done.stdout
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert (row["dataset"], row["setting"], row["n"]) == ("digits", "uniform10", 1797)
    for method in ("labelwatch", "cleanlab"):
        assert 0 < row[method]["f1"] <= 1, (method, row[method])
        assert 0 < row[method]["auprc"] <= 1, (method, row[method])
    assert row["cleanlab"]["cached"] is False  # computed fresh in the test's own cache dir
    assert row["cleanlab"]["f1"] > 0.5, row["cleanlab"]  # the reference itself is sane
    assert row["f1_ratio"] == pytest.approx(row["labelwatch"]["f1"] / row["cleanlab"]["f1"])


def test_with_answers_an_always_right_reviewer_answers_every_live_flag(tmp_path):
    out = tmp_path / "q.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "quality.py"), "--datasets", "digits", "--settings", "uniform20",
         "--no-write", "--no-baseline", "--answers", "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "## Detection quality with reviewers' answers" in done.stdout and "--answers ANSWERS.jsonl" in done.stdout
    (row,) = json.loads(out.read_text())["rows"]
    lw = row["labelwatch"]
    assert lw["answers_applied"] > 0 and lw["rejected"] == 0
    # an answer per sample flagged while streaming: live flags are all answered, and nothing else is
    assert lw["answers_applied"] == round(lw["live"]["review_fraction"] * lw["n"])
