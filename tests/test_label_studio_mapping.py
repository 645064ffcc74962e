"""Label Studio payloads to labelwatch messages, without the server: every payload either maps or
is rejected with a reason (a dead letter), never an unexpected exception (label-studio ML backend
users meet `KeyError: 'annotation'` on payloads they did not expect)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.labelstudio.mapping import (Controls, Rejected, correction_of, parse_webhook, review_task, sample_of,
                                          version_of)
from schemas import AnnotatedSample, Correction, Reason, ReviewEvent

CONTROLS = Controls("sentiment", "text", ("pos", "neg"))

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=12)


def choice(label, name="sentiment"):
    return [{"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def annotation(**overrides):
    return {"id": 7, "completed_by": 3, "updated_at": "2026-11-30T10:00:00Z", "result": choice("pos"), **overrides}


# plausible payloads with one part replaced by anything
fields = st.sampled_from(["id", "completed_by", "updated_at", "result", "was_cancelled", "created_at"])
broken_annotations = st.builds(lambda key, value: annotation(**{key: value}), fields, json_values)
VALID_DATA = {"text": "great taste", "ref": "r-1", "labelwatch_event_id": "e1", "sample_id": "s1", "label": "neg",
              "dataset": "d"}
broken_tasks = st.one_of(
    st.builds(lambda key, value: {"id": 4, "data": {**VALID_DATA, key: value}},
              st.sampled_from(sorted(VALID_DATA)), json_values),
    st.builds(lambda tid: {"id": tid, "data": dict(VALID_DATA)}, json_values),
    st.builds(lambda data: {"id": 4, "data": data}, json_values))


@settings(max_examples=300, deadline=None)
@given(task=broken_tasks, annotation=broken_annotations, id_field=st.sampled_from([None, "ref"]))
def test_any_annotation_maps_to_a_valid_sample_or_is_rejected_with_a_reason(task, annotation, id_field):
    try:
        sample = sample_of(task, annotation, 5, CONTROLS, id_field=id_field)
    except Rejected as rejected:
        assert str(rejected)
        return
    if sample is not None:
        again = AnnotatedSample.model_validate_json(sample.model_dump_json())
        assert again.model_dump(mode="json") == sample.model_dump(mode="json")
        assert sample.dataset == "label-studio-5" and sample.label in ("pos",) + tuple(
            c for r in annotation["result"] for c in r["value"]["choices"])


@settings(max_examples=300, deadline=None)
@given(task=broken_tasks, annotation=broken_annotations)
def test_any_review_answer_maps_to_a_valid_correction_or_is_rejected_with_a_reason(task, annotation):
    try:
        correction = correction_of(task, annotation, CONTROLS)
    except Rejected as rejected:
        assert str(rejected)
        return
    again = Correction.model_validate_json(correction.model_dump_json())
    assert again.model_dump(mode="json") == correction.model_dump(mode="json")


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode()),
                      st.fixed_dictionaries({"action": st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                                                          "TASKS_DELETED"])},
                                            optional={"task": json_values, "annotation": json_values,
                                                      "project": json_values}).map(lambda v: json.dumps(v).encode())))
def test_any_webhook_body_parses_or_is_rejected_with_a_reason(body):
    try:
        parsed = parse_webhook(body)
    except Rejected as rejected:
        assert str(rejected)
        return
    if parsed is not None:
        _, task, annotation = parsed
        assert isinstance(task, dict) and isinstance(annotation, dict)


def test_the_mapping_of_a_real_payload():
    task = {"id": 42, "data": {"text": "great taste", "ref": "r-9"}}
    sample = sample_of(task, annotation(completed_by={"id": 3, "email": "ana@example.org"}), 5, CONTROLS,
                       id_field="ref")
    assert (sample.sample_id, sample.label, sample.annotator_id, sample.text) == ("r-9", "pos", "ana@example.org",
                                                                                   "great taste")
    assert sample.annotated_at.isoformat() == "2026-11-30T10:00:00+00:00"
    assert sample.metadata["label_studio"] == {"project": 5, "task": 42, "annotation": 7,
                                               "updated_at": "2026-11-30T10:00:00Z"}
    assert version_of(annotation(updated_at="2026-11-30T11:00:00Z")) != version_of(annotation())  # an update: new version
    assert sample_of(task, annotation(was_cancelled=True), 5, CONTROLS) is None  # a skipped task labels nothing


def test_review_tasks_and_their_answers_round_trip():
    event = ReviewEvent(event_id="e9", dataset="label-studio-5", sample_id="42", label="neg", suggested_label="pos",
                        score=0.91, reasons=[Reason(detector="confident", score=0.91)], text="great taste",
                        annotator_id="3")
    task = {"id": 100, **review_task(event, CONTROLS)}
    assert {k: task["data"][k] for k in ("labelwatch_event_id", "sample_id", "label", "suggested_label")} == {
        "labelwatch_event_id": "e9", "sample_id": "42", "label": "neg", "suggested_label": "pos"}
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ["pos"]
    outcomes = [correction_of(task, annotation(result=choice(label)), CONTROLS) for label in ("pos", "neg")]
    assert [(c.outcome, c.corrected_label, c.event_id) for c in outcomes] == [("confirmed", "pos", "e9"),
                                                                              ("false_alarm", None, "e9")]
    assert correction_of(task, annotation(was_cancelled=True, result=[]), CONTROLS).outcome == "skip"
    other_control = annotation(result=choice("pos", name="topic"))
    try:
        correction_of(task, other_control, CONTROLS)
        raise AssertionError("an answer without the project's control must be rejected")
    except Rejected as rejected:
        assert "sentiment" in str(rejected)
