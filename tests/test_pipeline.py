"""The pipeline shared by ``run`` and ``audit``: decode, embed, detect, build review events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumer.pipeline import InputRecord, Pipeline
from consumer.records import decode
from detectors import MonitorConfig
from schemas import AnnotatedSample, DeadLetter, ReviewEvent, SourcePosition, make_event_id

CONFIG = MonitorConfig(detectors=("cluster", "model", "confident"), n_clusters=3, cluster_window=512,
                       min_cluster_size=5, model_warmup=30, learning_step=40, seed=0)
CENTERS = {"a": [0.0, 0.0, 0.0], "b": [10.0, 0.0, 0.0], "c": [0.0, 10.0, 0.0]}


def record(message, *, offset: int = 0, topic: str = "annotations") -> InputRecord:
    value = message if isinstance(message, bytes) or message is None else json.dumps(message).encode()
    return InputRecord(value, SourcePosition(topic=topic, partition=0, offset=offset))


def clean_messages(n: int, *, seed: int = 0, dataset: str | None = None, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = sorted(CENTERS)
    messages = []
    for i in range(start, start + n):
        label = names[int(rng.integers(0, 3))]
        vector = np.asarray(CENTERS[label]) + rng.normal(scale=0.5, size=3)
        message = {"sample_id": f"s{i}", "label": label, "embedding": [round(float(v), 5) for v in vector]}
        if dataset:
            message["dataset"] = dataset
        messages.append(message)
    return messages


def records_of(messages, *, first_offset: int = 0) -> list[InputRecord]:
    return [record(m, offset=first_offset + i) for i, m in enumerate(messages)]


def warmed_pipeline(**kwargs) -> tuple[Pipeline, int]:
    pipeline = Pipeline(CONFIG, embedder=None, **kwargs)
    offset = 0
    for batch in range(4):
        result = pipeline.process(records_of(clean_messages(40, seed=batch, start=offset), first_offset=offset))
        assert not result.dead_letters
        offset += 40
    return pipeline, offset


# --- dead letters -------------------------------------------------------------------------------------

GOOD = {"sample_id": "ok", "label": "a", "embedding": [0.1, 0.2, 0.3]}
BAD_RECORDS = [
    # (raw value, expected error_type, a phrase the reason must contain)
    (b"{not json", "not_json", "json"),
    (b"", "not_json", "json"),
    (b"\xff\xfe\x00garbage", "not_json", ""),
    (json.dumps({"label": "a", "embedding": [1.0, 2.0, 3.0]}).encode(), "schema", "sample_id"),
    (json.dumps({"sample_id": "x", "label": "a"}).encode(), "schema", "text"),
    (json.dumps({"sample_id": "x", "label": "", "text": "t"}).encode(), "schema", "label"),
    (json.dumps({**GOOD, "extra": 1}).encode(), "schema", "extra"),
    (b'{"sample_id": "x", "label": "a", "embedding": [1.0, NaN, 3.0]}', "schema", "embedding"),
    (json.dumps([GOOD]).encode(), "schema", ""),
    (None, "empty", "empty"),
]


@pytest.mark.parametrize(("value", "error_type", "phrase"), BAD_RECORDS,
                         ids=[f"{t}-{i}" for i, (_, t, _) in enumerate(BAD_RECORDS)])
def test_bad_record_becomes_dead_letter(value, error_type, phrase):
    source = SourcePosition(topic="annotations", partition=3, offset=17)
    letter = decode(InputRecord(value, source), max_bytes=10_000)
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == error_type
    assert letter.reason and phrase.lower() in letter.reason.lower()
    assert letter.original_bytes() == value
    assert letter.source == source


def test_oversized_record_becomes_dead_letter():
    value = json.dumps({**GOOD, "text": "x" * 500}).encode()
    letter = decode(InputRecord(value), max_bytes=len(value) - 1)
    assert isinstance(letter, DeadLetter) and letter.error_type == "too_large"
    assert str(len(value)) in letter.reason and str(len(value) - 1) in letter.reason
    assert letter.original_bytes() == value
    assert isinstance(decode(InputRecord(value), max_bytes=len(value)), AnnotatedSample)


def test_schema_reason_is_readable():
    letter = decode(InputRecord(json.dumps({"sample_id": "x", "label": "a", "embedding": ["one"]}).encode()), 10_000)
    assert letter.error_type == "schema"
    assert letter.reason.startswith("embedding.0: ")
    assert "{" not in letter.reason  # a sentence, not a dump of the error objects


def test_mixed_batch_loses_nothing():
    good = clean_messages(20)
    wrong_dimension = {"sample_id": "wide", "label": "a", "embedding": [1.0, 2.0, 3.0, 4.0]}
    oversized = {"sample_id": "big", "label": "a", "embedding": [0.5] * 3, "text": "y" * 3000}
    raw = [record(m, offset=i) for i, m in enumerate(good[:10])]
    raw += [record(b"{oops", offset=10), record(None, offset=11), record({"sample_id": "s", "label": "a"}, offset=12),
            record(wrong_dimension, offset=13), record(oversized, offset=14)]
    raw += [record(m, offset=15 + i) for i, m in enumerate(good[10:])]

    pipeline = Pipeline(CONFIG, embedder=None, max_message_bytes=2000)
    result = pipeline.process(raw)

    assert result.n_processed == 20
    assert result.n_processed + len(result.dead_letters) == len(raw)
    by_offset = {rec.source.offset: letter for rec, letter in result.dead_letters}
    assert {offset: letter.error_type for offset, letter in by_offset.items()} == {
        10: "not_json", 11: "empty", 12: "schema", 13: "dimension_mismatch", 14: "too_large"}
    for rec, letter in result.dead_letters:
        assert letter.source == rec.source
        assert letter.original_bytes() == rec.value
    mismatch = by_offset[13].reason
    assert "4" in mismatch and "3" in mismatch and "default" in mismatch
    assert pipeline.monitors["default"].dimension == 3
    invalid = {s.labels["reason"]: s.value for s in pipeline.metrics.samples_invalid.collect()[0].samples
               if s.name.endswith("_total")}
    assert invalid == {"not_json": 1, "empty": 1, "schema": 1, "dimension_mismatch": 1, "too_large": 1}


def test_wrong_dimension_in_a_later_batch_is_dead_lettered():
    pipeline, offset = warmed_pipeline()
    wide = {"sample_id": "wide", "label": "b", "embedding": [10.0, 0.0, 0.0, 0.0, 0.0]}
    result = pipeline.process([record(wide, offset=offset)] + records_of(clean_messages(5, seed=99), first_offset=offset + 1))
    assert result.n_processed == 5
    ((rec, letter),) = result.dead_letters
    assert letter.error_type == "dimension_mismatch" and rec.source.offset == offset
    assert "5" in letter.reason and "3" in letter.reason


def test_a_batch_of_only_wrong_dimensions_processes_nothing():
    pipeline, offset = warmed_pipeline()
    result = pipeline.process([record({"sample_id": "w", "label": "a", "embedding": [1.0, 2.0]}, offset=offset)])
    assert result.n_processed == 0 and len(result.dead_letters) == 1 and not result.events


# --- datasets -----------------------------------------------------------------------------------------


def test_datasets_keep_separate_monitors():
    pipeline = Pipeline(CONFIG, embedder=None)
    three_d = clean_messages(30, dataset="vision")
    five_d = [{"sample_id": f"t{i}", "label": "xy"[i % 2], "dataset": "tabular",
               "embedding": [float(i % 2)] * 4 + [float(i)]} for i in range(30)]
    interleaved = [m for pair in zip(three_d, five_d) for m in pair]
    result = pipeline.process(records_of(interleaved))
    assert not result.dead_letters
    assert result.n_processed == 60
    assert set(pipeline.monitors) == {"vision", "tabular"}
    assert pipeline.monitors["vision"].dimension == 3
    assert pipeline.monitors["tabular"].dimension == 5
    assert pipeline.monitors["vision"] is not pipeline.monitors["tabular"]
    assert pipeline.monitors["vision"].n_seen == 30 and pipeline.monitors["tabular"].n_seen == 30
    pipeline.flush()  # learns the unfinished step of each dataset
    vision_model = pipeline.monitors["vision"].detector("model")
    tabular_model = pipeline.monitors["tabular"].detector("model")
    assert vision_model.n_learned == 30 and tabular_model.n_learned == 30
    assert vision_model._seen_labels == {"a", "b", "c"} and tabular_model._seen_labels == {"x", "y"}


# --- embedding ------------------------------------------------------------------------------------------


class FakeEmbedder:
    """A stand-in for the sentence model: a fixed vector per known word."""

    WORDS = {"kitten": [0.0, 0.0, 1.0], "puppy": [0.0, 1.0, 0.0]}

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.asarray([self.WORDS[t.split()[0]] for t in texts], dtype=np.float32)


def test_text_samples_are_embedded():
    embedder = FakeEmbedder()
    pipeline = Pipeline(CONFIG, embedder=embedder)
    messages = [
        {"sample_id": "t1", "label": "cat", "text": "kitten on a mat"},
        {"sample_id": "v1", "label": "cat", "embedding": [0.0, 0.0, 0.9]},
        {"sample_id": "t2", "label": "dog", "text": "puppy in the park"},
        {"sample_id": "both", "label": "dog", "text": "kitten disguised", "embedding": [0.0, 1.0, 0.1]},
    ]
    result = pipeline.process(records_of(messages))
    assert result.n_processed == 4 and not result.dead_letters
    assert embedder.calls == [["kitten on a mat", "puppy in the park"]]  # only text-only samples, one call
    assert pipeline.monitors["default"].dimension == 3
    assert pipeline.monitors["default"].n_seen == 4


def test_text_sample_without_embedder_is_an_error():
    pipeline = Pipeline(CONFIG, embedder=None)
    with pytest.raises(RuntimeError, match="embedding model"):
        pipeline.process([record({"sample_id": "t", "label": "cat", "text": "kitten"})])


# --- review events --------------------------------------------------------------------------------------


def planted_stream() -> list[list[InputRecord]]:
    """Four clean warm-up batches, then one more in which sample "planted" sits in cluster b labelled "a"."""
    batches, offset = [], 0
    for batch in range(4):
        batches.append(records_of(clean_messages(40, seed=batch, start=offset), first_offset=offset))
        offset += 40
    last = clean_messages(20, seed=50, start=offset)
    last.insert(7, {"sample_id": "planted", "label": "a", "embedding": [10.1, -0.2, 0.1],
                    "annotator_id": "ann-9"})
    batches.append(records_of(last, first_offset=offset))
    return batches


def run_stream(batches) -> list[ReviewEvent]:
    pipeline = Pipeline(CONFIG, embedder=None)
    events = []
    for batch in batches:
        result = pipeline.process(batch)
        assert not result.dead_letters
        events += result.events
    return events


def test_planted_mislabel_produces_review_event():
    batches = planted_stream()
    events = run_stream(batches)
    planted = [e for e in events if e.sample_id == "planted"]
    assert len(planted) == 1, [e.sample_id for e in events]
    (event,) = planted
    assert event.event_id == make_event_id("default", "planted", "a", "flagged")
    assert (event.dataset, event.label, event.suggested_label, event.annotator_id) == ("default", "a", "b", "ann-9")
    assert 0.5 < event.score <= 1.0
    detectors = {reason.detector for reason in event.reasons}
    assert detectors and detectors <= {"cluster", "model", "confident"}
    assert "cluster" in detectors
    for reason in event.reasons:
        assert 0.0 <= reason.score <= 1.0 and reason.details
    assert isinstance(event.cluster_id, int) and event.cluster_id >= 0
    assert event.source == SourcePosition(topic="annotations", partition=0, offset=160 + 7)
    # the event is a valid wire message
    assert ReviewEvent.model_validate_json(event.model_dump_json()) == event
    # a clean stream of well-separated clusters is not flooded with false alarms
    assert len(events) <= 3, [e.sample_id for e in events]


def test_replay_yields_identical_event_ids():
    batches = planted_stream()
    first, second = run_stream(batches), run_stream(batches)
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert first == second
    assert len({e.event_id for e in first}) == len(first)


def test_review_event_counts_in_metrics():
    pipeline = Pipeline(CONFIG, embedder=None)
    n_events = 0
    for batch in planted_stream():
        n_events += len(pipeline.process(batch).events)
    samples = pipeline.metrics.review_events.collect()[0].samples
    assert {s.labels["dataset"]: s.value for s in samples if s.name.endswith("_total")} == {"default": n_events}
    processed = pipeline.metrics.samples_processed.collect()[0].samples
    assert {s.labels["dataset"]: s.value for s in processed if s.name.endswith("_total")} == {"default": 181}


def test_user_prediction_reaches_the_detectors():

    # the model detector is the one that reads the producer's own prediction: let it vote alone
    pipeline = Pipeline(CONFIG.replace(user_weight=0.9, voters=("model",)), embedder=None)
    offset = 0
    for batch in range(4):
        pipeline.process(records_of(clean_messages(40, seed=batch, start=offset), first_offset=offset))
        offset += 40
    # samples in cluster "a", labelled "a", whose producer model is sure they are "c"
    with_probas = {"sample_id": "u1", "label": "a", "embedding": [0.1, 0.1, 0.0],
                   "prediction": {"label": "c", "probabilities": {"c": 1.0, "a": 0.0}}}
    label_only = {**with_probas, "sample_id": "u2", "prediction": {"label": "c"}}
    no_prediction = {**with_probas, "sample_id": "u3"}
    del no_prediction["prediction"]
    result = pipeline.process([record(m, offset=offset + i) for i, m in enumerate((with_probas, label_only, no_prediction))])
    assert result.n_processed == 3
    flagged = {e.sample_id: e for e in result.events}
    assert set(flagged) == {"u1", "u2"}
    for event in flagged.values():
        assert event.suggested_label == "c"
        (reason,) = [r for r in event.reasons if r.detector == "model"]
        assert reason.details["user_model"] is True and reason.details["predicted"] == "c"


@pytest.mark.parametrize("warm", [False, True])
def test_embedding_beyond_float32_range_is_dead_lettered_and_the_batch_goes_on(warm):
    # finite as JSON and float64, infinite as the float32 the detectors use: checked for the whole batch at once
    pipeline, offset = warmed_pipeline() if warm else (Pipeline(CONFIG, embedder=None), 0)
    messages = clean_messages(6, seed=9, start=offset)
    messages[2]["embedding"] = [1e39, 0.0, 0.0]
    messages[4]["embedding"] = [0.0, -3.5e38, 0.0]
    result = pipeline.process(records_of(messages, first_offset=offset))
    assert [(r.source.offset, letter.error_type) for r, letter in result.dead_letters] == [
        (offset + 2, "schema"), (offset + 4, "schema")]
    assert all("float32 range" in letter.reason for _, letter in result.dead_letters)
    assert result.n_processed == 4
    assert [v.sample_id for v in result.verdicts] == [m["sample_id"] for i, m in enumerate(messages) if i not in (2, 4)]
