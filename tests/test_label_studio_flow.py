"""What the bridge says when annotations flow in but no review task can come of them (``/readyz``, the log)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from consumer.labelstudio.bridge import Bridge
from consumer.labelstudio.metrics import BridgeMetrics
from consumer.labelstudio.settings import BridgeSettings
from schemas import Reason, ReviewEvent

CONFIG = '<View><Text name="text" value="$text"/><Choices name="label" toName="text">' \
         '<Choice value="spam"/><Choice value="ham"/></Choices></View>'


class Projects:
    """Label Studio's project endpoint, the one call the bridge makes when it starts."""

    def project(self, project_id: int) -> dict:
        return {"id": project_id, "label_config": CONFIG}


def bridge() -> Bridge:
    settings = BridgeSettings(source_project=3, review_project=4, label_studio_token="t")
    return Bridge(settings, Projects(), writer=None, metrics=BridgeMetrics())


def annotation(i: int) -> SimpleNamespace:
    sample = {"sample_id": str(i), "label": "spam", "text": "win money", "dataset": "label-studio-3",
              "metadata": {"label_studio": {"project": 3, "task": i, "annotation": 100 + i, "updated_at": "t"}}}
    return SimpleNamespace(value=orjson.dumps(sample))


def event(i: int, dataset: str) -> SimpleNamespace:
    e = ReviewEvent(event_id=f"e{i}", dataset=dataset, sample_id=str(i), label="spam", suggested_label="ham",
                    score=0.9, reasons=[Reason(detector="confident", score=0.9)])
    return SimpleNamespace(value=e.model_dump_json().encode())


def test_annotations_without_review_events_say_where_to_look():
    b = bridge()
    assert b.stalled(b.flow()) is None  # nothing sent yet: nothing to explain
    for i in range(3):
        b._read_annotation(annotation(i))
    why = b.stalled(b.flow())
    assert why.startswith("3 annotations are on annotations, and no review event of dataset 'label-studio-3'")
    assert "labelwatch run judges annotations and writes to label-reviews" in why
    b._read_event(event(1, "label-studio-3"))
    assert b.stalled(b.flow()) is None
    assert b.flow() == {"annotations_on_input_topic": 3, "review_events": 1, "review_tasks": 0,
                        "review_events_waiting": 1}


def test_review_events_of_another_dataset_are_counted_and_named():
    b = bridge()
    b._read_annotation(annotation(0))
    for i in range(2):
        b._read_event(event(i, "mail"))
    assert b.flow()["review_events_of_other_datasets"] == {"mail": 2} and b.flow()["review_events_waiting"] == 0
    assert b.stalled(b.flow()) == ("label-reviews holds review events of datasets ['mail'] only: this bridge makes "
                                   "review tasks for dataset 'label-studio-3' (its --source-project) and no other")


class Sent(list):
    """The bridge's writer, keeping what it sends."""

    def send(self, topic: str, key: str, value: bytes) -> None:
        self.append((topic, key, value))


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="


def test_the_image_field_setting_names_the_task_field_the_desk_shows():
    task = {"id": 9, "data": {"text": "a digit", "picture": PIXEL, "image": "https://example.org/not-this.png"}}
    answer = {"id": 70, "completed_by": 3, "updated_at": "2026-12-07T10:00:00Z",
              "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["spam"]}}]}
    for field, expected in (("picture", PIXEL), ("image", "https://example.org/not-this.png"), ("text", None)):
        sent = Sent()
        settings = BridgeSettings(source_project=3, label_studio_token="t", image_field=field)
        Bridge(settings, Projects(), writer=sent, metrics=BridgeMetrics()).annotation(task, answer)
        (topic, key, value), = sent
        assert (topic, key) == ("annotations", "label-studio-3")
        assert orjson.loads(value)["metadata"].get("image_url") == expected  # plain text is no image
