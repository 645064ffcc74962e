"""Per-annotator quality: a deliberately bad annotator among ten is found, quickly, three ways."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import orjson
import pytest

from consumer.demo.datasets import load, to_messages
from consumer.pipeline import InputRecord, Pipeline
from detectors import AnnotatorQuality, MonitorConfig

ANNOTATORS = [f"annotator-{k}" for k in range(10)]
BAD = "annotator-7"


def annotated_digits(seed: int = 0, bad_noise: float = 0.5, others_noise: float = 0.03) -> list[dict]:
    """Digits, each sample labelled by one of ten annotators; the bad one corrupts half its labels."""
    data = load("digits")
    rng = np.random.default_rng(seed)
    who = rng.integers(0, len(ANNOTATORS), len(data))
    noise = np.where(who == ANNOTATORS.index(BAD), bad_noise, others_noise)
    flip = rng.random(len(data)) < noise
    labels = np.where(flip, (data.labels + rng.integers(1, 10, len(data))) % 10, data.labels)
    messages = to_messages(data, labels, order_seed=seed)
    for message in messages:
        message["annotator_id"] = ANNOTATORS[who[int(message["sample_id"].split("-")[1])]]
    return messages


def test_the_bad_annotator_is_ranked_first_with_a_confident_interval():
    messages = annotated_digits()
    pipeline = Pipeline(MonitorConfig(), embedder=None)
    first_at = None  # the number of BAD's samples judged when it became, and stayed, the worst
    for start in range(0, len(messages), 100):
        pipeline.process([InputRecord(orjson.dumps(m)) for m in messages[start:start + 100]])
        report = pipeline.annotator_report()
        if report and report[0]["annotator_id"] == BAD:
            first_at = first_at or next(row["n"] for row in report if row["annotator_id"] == BAD)
        else:
            first_at = None
    report = pipeline.annotator_report()
    assert [row["annotator_id"] for row in report][0] == BAD
    worst, runner_up = report[0], report[1]
    assert worst["interval"][0] > runner_up["interval"][1], "the bad annotator's interval clears everyone else's"
    assert 0.3 < worst["estimated_error_rate"] < 0.7
    assert all(row["estimated_error_rate"] < 0.2 for row in report[1:])
    assert first_at is not None and first_at <= 100, f"ranked first for good only after {first_at} of its samples"


def test_few_samples_stay_near_the_crowd_rate():
    quality = AnnotatorQuality(prior_strength=20)
    for i in range(500):
        quality.update("veteran", disagrees=i % 10 == 0)
    for _ in range(3):
        quality.update("newcomer", disagrees=True)  # three disagreements out of three
    newcomer = quality.estimate("newcomer")
    assert newcomer["estimated_error_rate"] < 0.3, "three samples are not enough to condemn anyone"
    assert newcomer["interval"][1] - newcomer["interval"][0] > quality.estimate("veteran")["interval"][1] - \
        quality.estimate("veteran")["interval"][0], "and the interval says how unsure that is"


def test_adwin_reports_an_annotator_who_gets_worse():
    quality = AnnotatorQuality()
    rng = np.random.default_rng(0)
    shifts = [quality.update("drifter", disagrees=bool(rng.random() < (0.05 if i < 1500 else 0.5)))
              for i in range(3000)]
    found = [(i, s) for i, s in enumerate(shifts) if s is not None]
    assert found, "no shift detected"
    at, shift = found[0]
    assert 1500 <= at < 1800 and shift.worse and shift.rate_after > shift.rate_before


def test_audit_writes_the_annotator_report(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(m) for m in annotated_digits(seed=1)) + b"\n")
    report_path = tmp_path / "annotators.json"
    done = subprocess.run([sys.executable, "-m", "consumer", "audit", str(source), "--out", str(tmp_path / "e.jsonl"),
                           "--annotators-out", str(report_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report[0]["annotator_id"] == BAD and len(report) == len(ANNOTATORS)
    for row in report:
        assert {"annotator_id", "n", "estimated_error_rate", "interval"} <= set(row)
        assert row["interval"][0] <= row["estimated_error_rate"] <= row["interval"][1]
    assert sum(row["n"] for row in report) >= 1797 - 500, "every judged sample counts for its annotator"


def test_the_running_service_serves_the_report_over_http_and_top_n_metrics():
    import urllib.request

    from consumer.health import Health, serve

    pipeline = Pipeline(MonitorConfig(), embedder=None)
    messages = annotated_digits(seed=2)
    for start in range(0, len(messages), 250):
        pipeline.process([InputRecord(orjson.dumps(m)) for m in messages[start:start + 250]])
    server = serve(pipeline.metrics, Health(stall_after_s=60), 0, "127.0.0.1",
                   reports={"/annotators": pipeline.annotator_report}, api_token="t0ken")
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        request = urllib.request.Request(base + "/annotators", headers={"Authorization": "Bearer t0ken"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            served = json.loads(answer.read())
        assert served[0]["annotator_id"] == BAD and served[0]["dataset"] == "digits"
        pipeline.publish_annotator_metrics(3)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            exposed = [line for line in answer.read().decode().splitlines()
                       if line.startswith("labelwatch_annotator_error_rate{")]
        assert len(exposed) == 3, "only the top three annotators become label values"
        assert any(f'annotator="{BAD}"' in line for line in exposed)
    finally:
        server.shutdown()
        server.server_close()


def test_a_change_in_the_label_mix_is_counted_as_drift():
    data = load("digits")
    order = np.argsort(data.labels < 5, kind="stable")  # digits 5-9 first, then 0-4: the label mix flips
    labels = data.labels[order]
    messages = [{"sample_id": f"d{i}", "label": str(labels[i]), "embedding": data.vectors[j].round(4).tolist()}
                for i, j in enumerate(order.tolist())]
    pipeline = Pipeline(MonitorConfig(), embedder=None)
    for start in range(0, len(messages), 200):
        pipeline.process([InputRecord(orjson.dumps(m)) for m in messages[start:start + 200]])
    assert pipeline.metrics.label_drift.labels(dataset="default")._value.get() > 0
    assert pipeline.metrics.cluster_drift.labels(dataset="default")._value.get() > 0

    steady = Pipeline(MonitorConfig(), embedder=None)
    shuffled = [messages[i] for i in np.random.default_rng(0).permutation(len(messages))]
    for start in range(0, len(shuffled), 200):
        steady.process([InputRecord(orjson.dumps(m)) for m in shuffled[start:start + 200]])
    assert steady.metrics.label_drift.labels(dataset="default")._value.get() <= 1, "a steady mix is not drift"


def test_the_cluster_report_lists_mixed_clusters_first_with_members_to_look_at():
    from consumer.demo.datasets import inject_noise

    data = load("digits")
    noisy, _ = inject_noise(data.labels, 0.2, n_classes=10, seed=3)
    pipeline = Pipeline(MonitorConfig(n_clusters=12), embedder=None)
    messages = to_messages(data, noisy, order_seed=3)
    for start in range(0, len(messages), 300):
        pipeline.process([InputRecord(orjson.dumps(m)) for m in messages[start:start + 300]])
    report = pipeline.cluster_report()
    assert report and [row["purity"] for row in report] == sorted(row["purity"] for row in report)
    most_mixed = report[0]
    assert most_mixed["purity"] < 0.8 < report[-1]["purity"]
    assert most_mixed["label_counts"][most_mixed["majority_label"]] == max(most_mixed["label_counts"].values())
    assert sum(row["size"] for row in report) == pipeline.monitors["digits"].n_learned, "every learned sample, once"
    by_id = {m["sample_id"]: m["label"] for m in messages}
    members = most_mixed["member_ids"]
    assert members and by_id[members[0]] != most_mixed["majority_label"], "the odd ones out come first"


def test_a_label_against_the_annotators_consensus_becomes_a_review_event():
    pipeline = Pipeline(MonitorConfig(), embedder=None)
    vector = [0.1, 0.2, 0.3]
    votes = [("triple", "ann-a", "cat"), ("triple", "ann-b", "cat"), ("triple", "ann-c", "dog"),
             ("pair", "ann-a", "cat"), ("pair", "ann-b", "cat")]
    result = pipeline.process([InputRecord(orjson.dumps({"sample_id": sid, "annotator_id": who, "label": label,
                                                          "embedding": vector})) for sid, who, label in votes])
    events = [e for e in result.events if any(r.detector == "consensus" for r in e.reasons)]
    assert [(e.sample_id, e.annotator_id, e.label, e.suggested_label) for e in events] == [("triple", "ann-c", "dog", "cat")]
    reason = next(r for r in events[0].reasons if r.detector == "consensus")
    assert reason.details["annotations"] == {"ann-a": "cat", "ann-b": "cat", "ann-c": "dog"}
    assert reason.details["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert events[0].priority in (1, 2, 3)
    assert pipeline.metrics.annotator_disagreements.labels(dataset="default")._value.get() == 1


def test_consensus_is_a_voter_like_any_other():
    vector = [0.1, 0.2, 0.3]
    votes = [("triple", "ann-a", "cat"), ("triple", "ann-b", "cat"), ("triple", "ann-c", "dog")]

    def records(sample_ids=("triple",)):
        return [InputRecord(orjson.dumps({"sample_id": sid, "annotator_id": who, "label": label, "embedding": vector}))
                for base, who, label in votes for sid in sample_ids if base == "triple"]

    # not among the voters: the disagreement is evidence in the verdict, not a flag
    quiet = Pipeline(MonitorConfig(voters=("confident",)), embedder=None).process(records())
    assert not quiet.events and quiet.verdicts[-1].sample_id == "triple"

    # a voter, its flag passes the same hold-back as any other: a reviewer who called the same
    # label on the same vector a false alarm withholds the next such flag. (Alone among the voters
    # here: with confident learning voting, the live flag budget of a ten-sample stream allows one.)
    def stream(review_first: bool) -> list[str]:
        pipeline = Pipeline(MonitorConfig(voters=("consensus",)), embedder=None)
        flagged = [e.sample_id for e in pipeline.process(records()).events]
        if review_first:
            pipeline.correct([InputRecord(orjson.dumps({"dataset": "default", "sample_id": "triple",
                                                        "outcome": "false_alarm"}))])
        return flagged + [e.sample_id for e in pipeline.process(records(("twin",))).events]

    assert stream(review_first=False) == ["triple", "twin"]
    assert stream(review_first=True) == ["triple"]
