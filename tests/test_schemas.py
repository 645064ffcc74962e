"""The wire models: what producers may send, what reviewers receive, what was rejected."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import AnnotatedSample, DeadLetter, Reason, ReviewEvent, SourcePosition, make_event_id


def sample(**fields) -> dict:
    return {"sample_id": "s1", "label": "cat", **fields}


def validate(message: dict) -> AnnotatedSample:
    """Validate as a producer's JSON message, the way the pipeline does."""
    return AnnotatedSample.model_validate_json(json.dumps(message))


def rejected_fields(message: dict) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        validate(message)
    return [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]


# --- AnnotatedSample: accepted ------------------------------------------------------------------


def test_text_only_sample_is_accepted():
    s = validate(sample(text="a photo of a cat"))
    assert (s.text, s.embedding) == ("a photo of a cat", None)


def test_embedding_only_sample_is_accepted():
    s = validate(sample(embedding=[0.5, -1.0, 2]))
    assert s.text is None
    assert s.embedding == [0.5, -1.0, 2.0]


def test_dataset_defaults_to_default():
    assert validate(sample(text="x")).dataset == "default"
    assert validate(sample(text="x", dataset="birds")).dataset == "birds"


def test_full_sample_is_accepted():
    s = validate(sample(text="t", embedding=[1.0], annotator_id="ann-3", metadata={"k": [1, 2]},
                        prediction={"label": "dog", "probabilities": {"dog": 0.75, "cat": 0.25}},
                        annotated_at="2024-05-01T12:30:00Z"))
    assert s.prediction.label == "dog"
    assert s.prediction.probabilities == {"dog": 0.75, "cat": 0.25}
    assert s.annotated_at.year == 2024 and s.annotated_at.utcoffset().total_seconds() == 0


def test_probability_bounds_are_inclusive():
    s = validate(sample(text="x", prediction={"label": "a", "probabilities": {"a": 1.0, "b": 0.0}}))
    assert s.prediction.probabilities == {"a": 1.0, "b": 0.0}


# --- AnnotatedSample: rejected ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["sample_id", "label"])
def test_missing_required_field_is_rejected(missing):
    message = sample(text="x")
    del message[missing]
    assert missing in rejected_fields(message)


@pytest.mark.parametrize("name", ["sample_id", "label", "dataset"])
def test_empty_string_is_rejected(name):
    assert name in rejected_fields(sample(text="x", **{name: ""}))


def test_empty_prediction_label_is_rejected():
    assert "prediction.label" in rejected_fields(sample(text="x", prediction={"label": ""}))


def test_empty_embedding_is_rejected():
    assert "embedding" in rejected_fields(sample(embedding=[]))


def test_neither_text_nor_embedding_is_rejected():
    with pytest.raises(ValidationError, match="non-empty 'text' or an 'embedding'"):
        validate(sample())


@pytest.mark.parametrize("text", ["", " ", "\t\n  "])
def test_blank_text_without_embedding_is_rejected(text):
    with pytest.raises(ValidationError, match="non-empty 'text' or an 'embedding'"):
        validate(sample(text=text))


def test_blank_text_with_embedding_is_accepted():
    assert validate(sample(text="  ", embedding=[1.0])).embedding == [1.0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_embedding_is_rejected(bad):
    with pytest.raises(ValidationError, match="finite"):
        AnnotatedSample(sample_id="s", label="l", embedding=[0.0, bad])


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_embedding_in_json_is_rejected(literal):
    raw = '{"sample_id": "s", "label": "l", "embedding": [1.0, %s]}' % literal
    with pytest.raises(ValidationError):
        AnnotatedSample.model_validate_json(raw)


def test_extra_top_level_field_is_rejected():
    assert "colour" in rejected_fields(sample(text="x", colour="red"))


def test_extra_prediction_field_is_rejected():
    assert "prediction.score" in rejected_fields(sample(text="x", prediction={"label": "a", "score": 0.3}))


@pytest.mark.parametrize("p", [1.5, -0.1, math.nan, math.inf])
def test_bad_prediction_probability_is_rejected(p):
    with pytest.raises(ValidationError, match="must be in"):
        AnnotatedSample(sample_id="s", label="a", text="x",
                        prediction={"label": "a", "probabilities": {"a": p}})


def test_nan_prediction_probability_in_json_is_rejected():
    raw = '{"sample_id": "s", "label": "a", "text": "x", "prediction": {"label": "a", "probabilities": {"a": NaN}}}'
    with pytest.raises(ValidationError):
        AnnotatedSample.model_validate_json(raw)


@pytest.mark.parametrize("when", ["yesterday", "2024-13-01T00:00:00Z", "2024-02-30T10:00:00Z", "", [2024]])
def test_bad_annotated_at_is_rejected(when):
    assert "annotated_at" in rejected_fields(sample(text="x", annotated_at=when))


def test_sample_is_immutable():
    s = validate(sample(text="x"))
    with pytest.raises(ValidationError):
        s.label = "dog"


# --- ReviewEvent ----------------------------------------------------------------------------------


def review(**fields) -> ReviewEvent:
    base = {"event_id": "e", "dataset": "default", "sample_id": "s", "label": "a", "score": 0.5,
            "reasons": [{"detector": "cluster", "score": 0.5}]}
    return ReviewEvent.model_validate({**base, **fields})


@pytest.mark.parametrize("score", [0.0, 0.5, 1.0])
def test_review_event_accepts_scores_in_unit_interval(score):
    assert review(score=score).score == score


@pytest.mark.parametrize("score", [-0.01, 1.01, math.nan])
def test_review_event_rejects_scores_outside_unit_interval(score):
    with pytest.raises(ValidationError):
        review(score=score)


@pytest.mark.parametrize("score", [-0.5, 1.5])
def test_reason_score_is_bounded(score):
    with pytest.raises(ValidationError):
        Reason(detector="model", score=score)


def test_source_position_rejects_negative_offsets():
    with pytest.raises(ValidationError):
        SourcePosition(topic="t", partition=0, offset=-1)
    with pytest.raises(ValidationError):
        SourcePosition(topic="t", partition=-1, offset=0)


def test_review_event_round_trips_through_json():
    event = review(source={"topic": "t", "partition": 2, "offset": 40}, cluster_id=3, suggested_label="b",
                   reasons=[{"detector": "model", "score": 0.9, "details": {"predicted": "b"}}])
    assert ReviewEvent.model_validate_json(event.model_dump_json()) == event


# --- make_event_id --------------------------------------------------------------------------------

ARGS = ("default", "a1", "cat", "flagged")


def test_make_event_id_is_deterministic():
    assert make_event_id(*ARGS) == make_event_id(*ARGS)
    assert isinstance(make_event_id(*ARGS), str)
    assert len(make_event_id(*ARGS)) == 32
    int(make_event_id(*ARGS), 16)  # hex


@pytest.mark.parametrize("position", range(4))
def test_make_event_id_depends_on_each_input(position):
    changed = list(ARGS)
    changed[position] += "x"
    assert make_event_id(*changed) != make_event_id(*ARGS)


def test_make_event_id_does_not_depend_on_how_fields_concatenate():
    assert make_event_id("ab", "c", "l", "v") != make_event_id("a", "bc", "l", "v")


def test_make_event_id_is_injective_across_field_boundaries():
    # Producers choose dataset, sample_id and label freely; two different samples must not share an id.
    assert make_event_id("d\x1fs", "x", "cat", "flagged") != make_event_id("d", "s\x1fx", "cat", "flagged")


# --- DeadLetter -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_dead_letter_round_trips_any_bytes(value):
    letter = DeadLetter.from_bytes(value, reason="r")
    assert letter.original_bytes() == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_dead_letter_round_trips_any_bytes_through_json(value):
    letter = DeadLetter.from_bytes(value, reason="r", error_type="schema",
                                   source=SourcePosition(topic="t", partition=0, offset=1))
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again == letter
    assert again.original_bytes() == value


@pytest.mark.parametrize("value", [b"\xff\xfe\x00", b"\xc3\x28", b"\xed\xa0\x80", b'{"a": "\x80"}'])
def test_non_utf8_bytes_are_kept_as_base64(value):
    letter = DeadLetter.from_bytes(value, reason="not UTF-8")
    assert letter.encoding == "base64"
    assert letter.original_bytes() == value


def test_utf8_bytes_are_kept_as_text():
    letter = DeadLetter.from_bytes('{"label": "chat noir \u00e9"}'.encode(), reason="schema")
    assert letter.encoding == "utf-8"
    assert letter.original == '{"label": "chat noir \u00e9"}'


def test_dead_letter_of_null_value():
    letter = DeadLetter.from_bytes(None, reason="empty record", error_type="empty")
    assert letter.original is None and letter.original_bytes() is None
    assert letter.error_type == "empty"


def test_dead_letter_rejects_unknown_encoding():
    with pytest.raises(ValidationError):
        DeadLetter(reason="r", original="x", encoding="latin-1")
