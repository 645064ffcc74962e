"""Label Studio payloads to labelwatch messages and back. Pure: no HTTP, no Kafka.

- :func:`sample_of` turns an annotation of the labelling project (a webhook's or an export's
  task and annotation) into an :class:`AnnotatedSample`;
- :func:`review_task` turns a :class:`ReviewEvent` into a task of the review project, with the
  suggestion as a prediction;
- :func:`correction_of` turns a reviewer's annotation of such a task into a :class:`Correction`.

Each raises :class:`Rejected` with a reason a person can act on when a payload does not fit.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas import CORRECTION_VERSION, AnnotatedSample, Correction, ReviewEvent, displayable_image

MODEL_VERSION = "labelwatch"
"""The ``model_version`` of the predictions on review tasks."""


class Rejected(ValueError):
    """A payload that cannot become a labelwatch message; the message says why."""


@dataclass(frozen=True)
class Controls:
    """Where a project's label lives: its first ``<Choices>`` control and the object it labels.

    >>> Controls.of('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    ...             '<Choice value="spam"/><Choice value="ham"/></Choices></View>')
    Controls(from_name='label', to_name='text', choices=('spam', 'ham'))
    """

    from_name: str
    to_name: str
    choices: tuple[str, ...]

    @classmethod
    def of(cls, label_config: str) -> Controls:
        try:
            root = ElementTree.fromstring(label_config)
        except ElementTree.ParseError as error:
            raise Rejected(f"the project's label config is not XML: {error}") from None
        for element in root.iter():
            if element.tag.lower() == "choices" and element.get("name") and element.get("toName"):
                choices = tuple(c.get("value") for c in element if c.tag.lower() == "choice" and c.get("value"))
                return cls(element.get("name"), element.get("toName"), choices)
        raise Rejected("the project's label config has no <Choices name=... toName=...> control: labelwatch needs "
                       "a classification project")


def dataset_of(project_id: int) -> str:
    """The labelwatch dataset of a Label Studio project.

    >>> dataset_of(7)
    'label-studio-7'
    """
    return f"label-studio-{project_id}"


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise Rejected(f"{where} is not an object")
    return value


def _field(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping or mapping[key] in (None, ""):
        raise Rejected(f"{where} has no {key!r}")
    return mapping[key]


def _choice(annotation: dict, controls: Controls) -> str | None:
    """The class chosen in ``annotation``'s result for ``controls``; ``None`` when it chose none."""
    result = annotation.get("result")
    if not isinstance(result, list):
        raise Rejected("annotation.result is not a list")
    for region in result:
        if isinstance(region, dict) and region.get("from_name") == controls.from_name:
            chosen = (region.get("value") or {}).get("choices") if isinstance(region.get("value"), dict) else None
            if not isinstance(chosen, list) or not chosen or not isinstance(chosen[0], str) or not chosen[0]:
                raise Rejected(f"annotation.result[{controls.from_name!r}] has no chosen class")
            if len(chosen) > 1:
                raise Rejected(f"annotation chose {len(chosen)} classes in {controls.from_name!r}: labelwatch "
                               "checks single-label classification")
            return chosen[0]
    return None


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise Rejected(f"{where} is not a string or a number")
    return str(value)


def _user(annotation: dict) -> str | None:
    user = annotation.get("completed_by")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    return None if user in (None, "") else str(user)


def _when(annotation: dict) -> datetime | None:
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except (ValueError, OverflowError):
        raise Rejected(f"annotation time {str(stamp)[:40]!r} is not an ISO 8601 timestamp") from None


def parse_webhook(body: bytes) -> tuple[Any, dict, dict] | None:
    """``(project id, task, annotation)`` of an annotation webhook; ``None`` for another action.

    >>> parse_webhook(b'{"action": "PROJECT_UPDATED"}') is None
    True
    >>> parse_webhook(b'{"action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": {"id": 1}, "annotation": {"id": 2}}')
    (3, {'id': 1}, {'id': 2})
    >>> parse_webhook(b'{"action": "ANNOTATION_CREATED"}')
    Traceback (most recent call last):
    ...
    consumer.labelstudio.mapping.Rejected: the ANNOTATION_CREATED webhook has no task or no annotation
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise Rejected(f"the webhook body is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise Rejected("the webhook body is not a JSON object")
    action = payload.get("action")
    if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        return None
    task, annotation = payload.get("task"), payload.get("annotation")
    if not isinstance(task, dict) or not isinstance(annotation, dict):
        raise Rejected(f"the {action} webhook has no task or no annotation")
    project = payload.get("project")
    return project.get("id") if isinstance(project, dict) else annotation.get("project"), task, annotation


def _id(value: Any, where: str) -> int:
    """A Label Studio id: a positive integer (or its digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise Rejected(f"{where} is not an id: {str(value)[:40]!r}")
    return int(value)


def version_of(annotation: dict) -> tuple[int, str]:
    """What identifies one version of an annotation: its id and when it was last changed."""
    return _id(annotation.get("id"), "annotation.id"), str(annotation.get("updated_at") or annotation.get("created_at"))


def sample_of(task: dict, annotation: dict, project_id: int, controls: Controls, *, text_field: str = "text",
              id_field: str | None = None, image_field: str = "image") -> AnnotatedSample | None:
    """The :class:`AnnotatedSample` of one annotation of the labelling project; ``None`` for a
    skipped one (``was_cancelled``), which labels nothing.

    ``sample_id`` is the task id, or the task's data field ``id_field``; ``text`` its ``text_field``;
    ``annotator_id`` the user who completed it; ``dataset`` the project; ``annotated_at`` the time of
    the annotation's last change. ``metadata.label_studio`` keeps the task, annotation and version, and
    ``metadata.image_url`` the task's ``image_field`` when it holds an image a browser may show
    (:func:`schemas.displayable_image`), for the review desk.

    >>> controls = Controls("label", "text", ("spam", "ham"))
    >>> task = {"id": 4, "data": {"text": "win a prize"}}
    >>> annotation = {"id": 9, "completed_by": 2, "updated_at": "2026-11-30T10:00:00Z",
    ...               "result": [{"from_name": "label", "to_name": "text", "type": "choices",
    ...                           "value": {"choices": ["spam"]}}]}
    >>> s = sample_of(task, annotation, 3, controls)
    >>> s.sample_id, s.label, s.text, s.annotator_id, s.dataset
    ('4', 'spam', 'win a prize', '2', 'label-studio-3')
    >>> task["data"]["image"] = "https://example.org/prize.png"
    >>> sample_of(task, annotation, 3, controls).metadata["image_url"]
    'https://example.org/prize.png'
    """
    if annotation.get("was_cancelled"):
        return None
    label = _choice(annotation, controls)
    if label is None:
        raise Rejected(f"the annotation has no result for the control {controls.from_name!r}")
    data = _object(_field(task, "data", "task"), "task.data")
    text = data.get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise Rejected(f"task.data has no text in the field {text_field!r}")
    sample_id = _text(_field(data, id_field, "task.data"), f"task.data.{id_field}") if id_field \
        else str(_id(task.get("id"), "task.id"))
    annotation_id, updated = version_of(annotation)
    metadata: dict[str, Any] = {"label_studio": {"project": project_id,
                                                 "task": task["id"] if type(task.get("id")) is int else None,
                                                 "annotation": annotation_id, "updated_at": updated}}
    image = displayable_image(data.get(image_field))
    if image is not None:
        metadata["image_url"] = image
    try:
        return AnnotatedSample(
            sample_id=sample_id, label=label, text=text, dataset=dataset_of(project_id),
            annotator_id=_user(annotation), annotated_at=_when(annotation), metadata=metadata)
    except ValidationError as error:
        raise Rejected("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from None


def review_task(event: ReviewEvent, controls: Controls) -> dict:
    """A task of the review project for ``event``: the sample, the evidence, and the suggestion as a
    prediction scored with the event's score (Label Studio's Data Manager sorts by it).

    >>> from schemas import Reason
    >>> event = ReviewEvent(event_id="e1", dataset="label-studio-3", sample_id="4", label="ham",
    ...                     suggested_label="spam", score=0.93, reasons=[Reason(detector="confident", score=0.93)],
    ...                     text="win a prize")
    >>> task = review_task(event, Controls("label", "text", ("spam", "ham")))
    >>> task["data"]["labelwatch_event_id"], task["predictions"][0]["score"], task["predictions"][0]["model_version"]
    ('e1', 0.93, 'labelwatch')
    """
    data = {"text": event.text or f"{event.dataset}/{event.sample_id}", "labelwatch_event_id": event.event_id,
            "sample_id": event.sample_id, "dataset": event.dataset, "label": event.label,
            "suggested_label": event.suggested_label, "score": round(event.score, 4), "priority": event.priority,
            "annotator_id": event.annotator_id, "late": event.late,
            "reasons": "; ".join(f"{r.detector} {r.score:.2f}" for r in event.reasons)}
    task: dict[str, Any] = {"data": data}
    prediction = prediction_of(data, controls)
    if prediction:
        task["predictions"] = [prediction]
    return task


def prediction_of(data: dict, controls: Controls) -> dict | None:
    """The ``labelwatch`` prediction of a review task, from its data; ``None`` without a suggestion."""
    if not data.get("suggested_label"):
        return None
    return {"model_version": MODEL_VERSION, "score": data.get("score"), "result": [
        {"from_name": controls.from_name, "to_name": controls.to_name, "type": "choices",
         "value": {"choices": [data["suggested_label"]]}}]}


def correction_of(task: dict, annotation: dict, controls: Controls) -> Correction:
    """A reviewer's annotation of a review task as a :class:`Correction`: the task's own label is a
    false alarm, any other class confirms the error with that label, and a skipped task is a skip.

    >>> controls = Controls("label", "text", ("spam", "ham"))
    >>> task = {"id": 12, "data": {"labelwatch_event_id": "e1", "sample_id": "4", "dataset": "d", "label": "ham"}}
    >>> answer = {"id": 30, "completed_by": {"id": 5, "email": "ana@example.org"}, "updated_at": "2026-11-30T10:05:00Z",
    ...           "result": [{"from_name": "label", "value": {"choices": ["ham"]}}]}
    >>> c = correction_of(task, answer, controls)
    >>> c.outcome, c.corrected_label, c.reviewer_id
    ('false_alarm', None, 'label-studio:ana@example.org')
    """
    data = _object(_field(task, "data", "task"), "task.data")
    event_id, sample_id, label, dataset = (_text(_field(data, key, "task.data"), f"task.data.{key}")
                                           for key in ("labelwatch_event_id", "sample_id", "label", "dataset"))
    chosen = None if annotation.get("was_cancelled") else _choice(annotation, controls)
    if chosen is None and not annotation.get("was_cancelled"):
        raise Rejected(f"the review annotation has no result for the control {controls.from_name!r}")
    outcome = "skip" if chosen is None else "false_alarm" if chosen == label else "confirmed"
    user = _user(annotation)
    try:
        return Correction(dataset=dataset, sample_id=sample_id, event_id=event_id, outcome=outcome,
                          corrected_label=chosen if outcome == "confirmed" else None,
                          reviewer_id=f"label-studio:{user}" if user else "label-studio",
                          answered_at=_when(annotation), schema_version=CORRECTION_VERSION)
    except ValidationError as error:
        raise Rejected("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from None
