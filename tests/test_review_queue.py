"""The desk's queue view: urgency order, answers, skips, leases and progress, without Kafka."""

from __future__ import annotations

from datetime import date, datetime, timezone

from consumer.desk.explain import in_words
from consumer.desk.queue import Filters, Lease, ReviewQueue
from schemas import Correction, Neighbor, Reason, ReviewContext, ReviewEvent


def event(i: int, *, dataset="pets", label="cat", priority=2, score=0.8, detector="confident") -> ReviewEvent:
    return ReviewEvent(event_id=f"e{i}", dataset=dataset, sample_id=f"s{i}", label=label, suggested_label="dog",
                       score=score, priority=priority, reasons=[Reason(detector=detector, score=score)])


def ids(events) -> list[str]:
    return [e.event_id for e in events]


def test_most_urgent_first_and_filters_by_dataset_detector_and_label():
    queue = ReviewQueue()
    for e in [event(0, score=0.7), event(1, priority=1, score=0.6), event(2, score=0.9, detector="cluster"),
              event(3, dataset="cars", label="van"), event(2, score=0.9, detector="cluster")]:  # e2 read twice
        queue.add_event(e)
    assert ids(queue.open_items()) == ["e1", "e2", "e3", "e0"]
    assert ids(queue.open_items(Filters(dataset="cars"))) == ["e3"]
    assert ids(queue.open_items(Filters(detector="cluster"))) == ["e2"]
    assert ids(queue.open_items(Filters(label="cat", dataset="pets"))) == ["e1", "e2", "e0"]


def test_an_answer_from_any_tool_closes_every_event_of_its_sample_and_counts_once():
    queue = ReviewQueue()
    queue.add_event(event(0))
    late = event(0).model_copy(update={"event_id": "e0-late", "late": True})
    queue.add_event(late)
    answer = Correction(dataset="pets", sample_id="s0", outcome="confirmed", corrected_label="dog",
                        answered_at=datetime(2026, 11, 30, 9, tzinfo=timezone.utc))
    queue.add_answer(answer)
    queue.add_answer(answer)  # written by this desk, then read back
    assert queue.open_items() == []
    progress = queue.progress(today=date(2026, 11, 30))["pets"]
    assert (progress.open, progress.answered_today, progress.confirmed, progress.false_alarms) == (0, 1, 1, 0)
    assert queue.progress(today=date(2026, 12, 1))["pets"].answered_today == 0


def test_a_skip_hides_the_event_from_that_reviewer_only_and_frees_their_lease():
    queue = ReviewQueue()
    queue.add_event(event(0))
    assert queue.add_lease(Lease("e0", "ana", "l1", expires_at=100.0), at=1.0)
    assert ids(queue.open_items(reviewer="bo", now=2.0)) == []
    queue.add_answer(Correction(dataset="pets", sample_id="s0", outcome="skip", event_id="e0", reviewer_id="ana"))
    assert ids(queue.open_items(reviewer="ana", now=2.0)) == []
    assert ids(queue.open_items(reviewer="bo", now=2.0)) == ["e0"]
    assert queue.add_lease(Lease("e0", "bo", "l2", expires_at=110.0), at=3.0)
    assert queue.progress()["pets"].open == 1  # a skip answers nothing


def test_the_first_live_claim_in_log_order_holds_until_it_expires():
    queue = ReviewQueue()
    queue.add_event(event(0))
    assert queue.add_lease(Lease("e0", "ana", "l1", expires_at=100.0), at=10.0)
    assert not queue.add_lease(Lease("e0", "bo", "l2", expires_at=150.0), at=99.0)  # written before ana's expired
    assert queue.holder("e0", now=50.0).lease_id == "l1"
    assert queue.holder("e0", now=100.0) is None  # expired: open to all again
    assert ids(queue.open_items(reviewer="bo", now=100.0)) == ["e0"]
    assert queue.add_lease(Lease("e0", "bo", "l3", expires_at=200.0), at=100.0)
    assert queue.add_lease(Lease("e0", "bo", "l4", expires_at=260.0), at=140.0)  # the holder renews its own
    assert queue.held_by("bo", Filters(), now=150.0).event_id == "e0"
    assert queue.held_by("ana", Filters(), now=150.0) is None


def test_labels_offered_for_relabelling_come_from_everything_seen_in_the_dataset():
    queue = ReviewQueue()
    queue.add_event(event(0).model_copy(update={"context": ReviewContext(
        cluster_labels={"cat": 3, "fox": 1}, neighbors=[Neighbor(sample_id="s9", label="owl", similarity=0.9)])}))
    queue.add_answer(Correction(dataset="pets", sample_id="s5", outcome="confirmed", corrected_label="emu"))
    assert queue.labels("pets") == ["cat", "dog", "emu", "fox", "owl"]
    assert queue.labels("cars") == []


def test_reasons_read_as_sentences():
    e = ReviewEvent(event_id="e", dataset="d", sample_id="s", label="spam", suggested_label="ham", score=0.9,
                    reasons=[Reason(detector="confident", score=0.9,
                                    details={"p_label": 0.04, "p_suggested": 0.91, "threshold": 0.35}),
                             Reason(detector="consensus", score=0.7,
                                    details={"consensus": "ham", "annotations": {"a": "ham", "b": "ham", "c": "spam"}}),
                             Reason(detector="shy", score=0.5, details={"odd": 3})])
    assert in_words(e) == [
        "Judged out of sample, spam has a probability of 0.04 and ham of 0.91; spam needs 0.35 to be trusted.",
        "2 of its 3 annotators labelled it ham.",
        "shy: score 0.50 (odd 3).",
    ]
