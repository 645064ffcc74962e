"""``labelwatch audit``: the service pipeline over a JSONL file, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

from consumer.demo.datasets import corrupted_ids, inject_noise, load, to_messages
from schemas import ReviewEvent


def _audit(tmp_path, lines: list[bytes], *extra: str) -> tuple[subprocess.CompletedProcess, list[ReviewEvent]]:
    source, out, rejects = tmp_path / "in.jsonl", tmp_path / "events.jsonl", tmp_path / "rejects.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "audit", str(source), "--out", str(out), "--rejects", str(rejects), *extra],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done, [ReviewEvent.model_validate_json(line) for line in out.read_text().splitlines()]


def test_digits_with_ten_percent_noise_reaches_the_quality_floor(tmp_path):
    data = load("digits")
    noisy, corrupted = inject_noise(data.labels, 0.10, n_classes=10, seed=7)
    messages = to_messages(data, noisy, order_seed=7)
    _, events = _audit(tmp_path, [orjson.dumps(m) for m in messages])

    flagged = {e.sample_id for e in events}
    truth = corrupted_ids(data, corrupted)
    precision = len(flagged & truth) / len(flagged)
    recall = len(flagged & truth) / len(truth)
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= 0.6, f"F1 {f1:.3f} (precision {precision:.3f}, recall {recall:.3f})"


def test_bad_lines_are_reported_with_line_numbers_and_do_not_stop_the_run(tmp_path):
    good = [orjson.dumps({"sample_id": f"s{i}", "label": "ab"[i % 2], "embedding": [float(i % 2), 1.0]})
            for i in range(60)]
    lines = good[:10] + [b"{broken", b'{"sample_id": "x"}'] + good[10:] + [b"\xff\xfe"]
    done, events = _audit(tmp_path, lines, "--summary-out", str(tmp_path / "summary.json"))

    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [11, 12, 63]
    assert [r["dead_letter"]["error_type"] for r in rejects] == ["not_json", "schema", "not_json"]
    assert "label" in rejects[1]["dead_letter"]["reason"]
    assert "60 samples from 63 lines" in done.stderr and "3 rejected" in done.stderr
    # the same counts for scripts (bench/quality.py reads them)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {"lines": 63, "processed": 60, "rejected": 3, "flagged": len(events),
                       "flagged_live": summary["flagged_live"], "estimated_error_rate": summary["estimated_error_rate"],
                       "answers_applied": 0, "answers_unmatched": 0}
    assert 0 <= summary["flagged_live"] <= len(events)
    assert list(summary["estimated_error_rate"]) == ["default"] and 0 <= summary["estimated_error_rate"]["default"] <= 1


@pytest.mark.parametrize(("policy", "at_least"), [("union", 1), ("vote:2", 2), ("intersection", 3)])
def test_policy_decides_how_many_voters_must_flag(tmp_path, policy, at_least):
    data = load("digits")
    noisy, _ = inject_noise(data.labels, 0.10, n_classes=10, seed=3)
    lines = [orjson.dumps(m) for m in to_messages(data, noisy, order_seed=3)[:900]]
    voters = {"cluster", "model", "confident"}
    _, events = _audit(tmp_path, lines, "--policy", policy, "--detectors", ",".join(sorted(voters)),
                       "--voters", ",".join(sorted(voters)))
    assert events, "nothing flagged"
    for event in events:
        flaggers = {r.detector for r in event.reasons} & voters
        assert len(flaggers) >= at_least, f"{policy}: only {flaggers} flagged {event.sample_id}"


def test_text_is_embedded_with_the_packaged_model_offline(tmp_path):
    texts = ["great coffee, I love it", "awful taste, never again"] * 30
    lines = [orjson.dumps({"sample_id": f"t{i}", "label": "pos" if i % 2 == 0 else "neg", "text": text})
             for i, text in enumerate(texts)]
    lines.append(orjson.dumps({"sample_id": "planted", "label": "neg", "text": "great coffee, I love it"}))
    _, events = _audit(tmp_path, lines, "--n-clusters", "2", "--model-warmup", "10", "--batch-size", "20")
    planted = [e for e in events if e.sample_id == "planted"]
    assert planted and planted[0].suggested_label == "pos"


def test_answers_are_applied_once_their_flag_is_sent_and_shrink_an_estimate_reviewers_disown(tmp_path):
    data = load("digits")
    noisy, _ = inject_noise(data.labels, 0.10, n_classes=10, seed=5)
    lines = [orjson.dumps(m) for m in to_messages(data, noisy, order_seed=5)]
    summary_path = tmp_path / "summary.json"
    _, plain = _audit(tmp_path, lines, "--summary-out", str(summary_path))
    plain_summary = json.loads(summary_path.read_text())

    # a reviewer who calls every flag a false alarm; one answer line is not a Correction
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b"\n".join([orjson.dumps({"dataset": "digits", "sample_id": f"digits-{i}", "outcome": "false_alarm"})
                                    for i in range(len(data))] + [b'{"sample_id": "digits-1", "outcome": "maybe"}']) + b"\n")
    done, answered = _audit(tmp_path, lines, "--summary-out", str(summary_path), "--answers", str(answers))
    summary = json.loads(summary_path.read_text())
    live = {e.sample_id for e in answered[:summary["flagged_live"]]}
    assert summary["answers_applied"] == len(live) > 0, "one answer per sample flagged while streaming"
    assert summary["answers_unmatched"] == len(data) - len(live)
    assert f"{len(live)} answers applied" in done.stderr
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["dead_letter"]["error_type"] for r in rejects] == ["invalid_correction"] and summary["rejected"] == 1
    # false alarms teach the detectors nothing, so the estimate from the labels is the same; the answers
    # correct it by the root of (0 confirmed + 10) / (every live flag answered + 10)
    assert summary["estimated_error_rate"]["digits"] == pytest.approx(
        plain_summary["estimated_error_rate"]["digits"] * (10 / (10 + len(live))) ** 0.5)
    assert len(answered) < len(plain) / 2, "the budgets follow the estimate"
