"""The bridge's three flows, each optional, and how they recover what a webhook missed.

1. **Annotations in.** An annotation of the labelling project (a webhook, or found by a
   reconcile) becomes an :class:`AnnotatedSample` on the input topic. An updated annotation is a
   new version of the sample: labelwatch judges it again under the new label.
2. **Review tasks out.** Each review event of the labelling project's dataset becomes one task of
   the review project, with the suggestion as a ``labelwatch`` prediction.
3. **Answers back.** A reviewer's annotation of a review task becomes a :class:`Correction`.

The bridge keeps no state. What is already done is read back at every start: annotation versions
from the input topic (``metadata.label_studio``), answers from the corrections topic, and review
tasks from the review project itself. A webhook sent while the bridge was down is caught by the
next reconcile (at start, then every ``reconcile_interval_s``), which compares both projects with
what was read back, so an annotation is neither lost nor sent twice, and no task is made twice
(one that a failed import made anyway is deleted).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import orjson

from consumer.labelstudio.client import LabelStudio, LabelStudioError
from consumer.labelstudio.mapping import (Controls, Rejected, correction_of, dataset_of, parse_webhook, prediction_of,
                                          review_task, sample_of, version_of)
from consumer.labelstudio.metrics import BridgeMetrics
from consumer.labelstudio.settings import BridgeSettings
from consumer.tailing import AckedWriter, TopicReader
from schemas import Correction, DeadLetter, ReviewEvent

log = logging.getLogger("labelwatch.label_studio")


def answer_key(correction: Correction) -> tuple:
    """What identifies one answer from Label Studio: the event, the reviewer and the annotation's version."""
    return (correction.event_id, correction.reviewer_id, correction.answered_at)


class Bridge:
    """The flows between one Label Studio instance and the topics."""

    def __init__(self, settings: BridgeSettings, client: LabelStudio, writer: AckedWriter, metrics: BridgeMetrics):
        self.settings = settings
        self.client = client
        self.writer = writer
        self.metrics = metrics
        self.source = Controls.of(client.project(settings.source_project)["label_config"]) \
            if settings.source_project else None
        self.review = Controls.of(client.project(settings.review_project)["label_config"]) \
            if settings.review_project else None
        self._lock = threading.RLock()
        self._sent: set[tuple[int, str]] = set()       # annotation versions on the input topic
        self._answered: set[tuple] = set()             # answers on the corrections topic
        self._tasks: set[str] | None = None            # event ids with a review task (None: not listed yet)
        self._pending: dict[str, ReviewEvent] = {}     # events waiting for their task
        self._dead: set[tuple] = set()                 # what this process dead-lettered already
        self._events = 0                               # review events of the labelling project's dataset
        self._ignored: Counter[str] = Counter()        # review events of other datasets, by dataset
        self.label_studio_error: str | None = "not called yet"

    # -- read back from Kafka (the reader's handlers) ------------------------------------------
    def reader(self) -> TopicReader:
        handlers = {}
        if self.source:
            handlers[self.settings.input_topic] = self._read_annotation
        if self.review:
            handlers[self.settings.review_topic] = self._read_event
            handlers[self.settings.corrections_topic] = self._read_answer
        return TopicReader(self.settings.kafka_config(), self.settings.group_id, handlers,
                           name="labelwatch-label-studio")

    def _read_annotation(self, record) -> None:
        try:
            value = orjson.loads(record.value) if record.value else None
        except orjson.JSONDecodeError:
            return  # the input topic is labelwatch run's to judge; only the bridge's own records matter here
        meta = value.get("metadata", {}).get("label_studio") if isinstance(value, dict) else None
        if isinstance(meta, dict) and "annotation" in meta:
            with self._lock:
                self._sent.add((int(meta["annotation"]), str(meta.get("updated_at"))))

    def _read_answer(self, record) -> None:
        correction = Correction.model_validate_json(record.value)
        if correction.reviewer_id and correction.reviewer_id.startswith("label-studio"):
            with self._lock:
                self._answered.add(answer_key(correction))

    def _read_event(self, record) -> None:
        event = ReviewEvent.model_validate_json(record.value)
        with self._lock:
            if self.source is not None and event.dataset != dataset_of(self.settings.source_project):
                self._ignored[event.dataset] += 1
                return
            self._events += 1
            if self._tasks is None or event.event_id not in self._tasks:
                self._pending[event.event_id] = event

    # -- what is flowing, for /readyz and the log ---------------------------------------------
    def flow(self) -> dict:
        """How far annotations, review events and tasks have got: ``/readyz`` shows it."""
        with self._lock:
            return {"annotations_on_input_topic": len(self._sent), "review_events": self._events,
                    "review_tasks": len(self._tasks or ()), "review_events_waiting": len(self._pending),
                    **({"review_events_of_other_datasets": dict(self._ignored)} if self._ignored else {})}

    def stalled(self, flow: dict) -> str | None:
        """Why no review task can come of ``flow`` (:meth:`flow`), in words; ``None`` when nothing says so."""
        mine = dataset_of(self.settings.source_project) if self.source else None
        if self.review and flow.get("review_events_of_other_datasets") and not flow["review_events"]:
            return (f"{self.settings.review_topic} holds review events of datasets "
                    f"{sorted(flow['review_events_of_other_datasets'])} only: this bridge makes review tasks for "
                    f"dataset {mine!r} (its --source-project) and no other")
        if self.review and flow["annotations_on_input_topic"] and not flow["review_events"]:
            return (f"{flow['annotations_on_input_topic']} annotations are on {self.settings.input_topic}, and no "
                    f"review event{f' of dataset {mine!r}' if mine else ''} has come back on "
                    f"{self.settings.review_topic} yet: check that labelwatch run judges {self.settings.input_topic} "
                    f"and writes to {self.settings.review_topic} (it flags nothing before its first learning step, 500 "
                    "annotations by default, is learned, and until the second step only what the clusters confirm: "
                    "see its labelwatch_review_events_total)")
        return None

    # -- the flows -----------------------------------------------------------------------------
    def webhook(self, body: bytes) -> int:
        """Handle one webhook; the HTTP status to answer (503: retry, the broker did not take it)."""
        try:
            parsed = parse_webhook(body)
        except Rejected as error:
            self._dead_letter(body, str(error), ("webhook", body[:200]))
            return 200
        if parsed is None:
            return 200  # another action: nothing to do
        project, task, annotation = parsed
        if project == self.settings.source_project and self.source:
            self.annotation(task, annotation, raw=body)
        elif project == self.settings.review_project and self.review:
            self.answer(task, annotation, raw=body)
        return 200

    def annotation(self, task: dict, annotation: dict, *, raw: bytes | None = None) -> None:
        """Send one annotation version to the input topic, unless it is there already."""
        try:
            version = version_of(annotation)
            sample = sample_of(task, annotation, self.settings.source_project, self.source,
                               text_field=self.settings.text_field, id_field=self.settings.id_field,
                               image_field=self.settings.image_field)
        except Rejected as error:
            self._dead_letter(raw or orjson.dumps({"task": task, "annotation": annotation}),
                              f"label studio annotation: {error}", ("annotation", str(annotation.get("id"))))
            return
        if sample is None:
            return
        with self._lock:
            if version in self._sent:
                return
            self.writer.send(self.settings.input_topic, sample.dataset, sample.model_dump_json().encode())
            self._sent.add(version)
        self.metrics.annotations.inc()

    def answer(self, task: dict, annotation: dict, *, raw: bytes | None = None) -> None:
        """Send a reviewer's answer to the corrections topic, unless it is there already."""
        try:
            correction = correction_of(task, annotation, self.review)
        except (Rejected, ValueError) as error:
            self._dead_letter(raw or orjson.dumps({"task": task, "annotation": annotation}),
                              f"label studio review answer: {error}", ("answer", str(annotation.get("id"))))
            return
        with self._lock:
            if answer_key(correction) in self._answered:
                return
            self.writer.send(self.settings.corrections_topic, correction.dataset, correction.model_dump_json().encode())
            self._answered.add(answer_key(correction))
        self.metrics.answers.labels(outcome=correction.outcome).inc()

    def push_tasks(self) -> int:
        """Make a review task for every event waiting for one; returns how many were made.

        The events count as tasks from the moment they are taken, so that a copy of one read
        meanwhile (the review topic is at-least-once) waits for nothing. If the import fails they
        are put back, and no task is made until a reconcile has listed the review project again:
        Label Studio may have saved the tasks before it failed (its import is not one
        transaction), or may still save them after the call timed out. A task made twice that way
        anyway is deleted by the next reconcile (:meth:`_deduplicate`).
        """
        with self._lock:
            if self._tasks is None or not self._pending:
                return 0
            events = [e for e in self._pending.values() if e.event_id not in self._tasks]
            self._pending.clear()
            self._tasks.update(e.event_id for e in events)
        if events:
            try:
                summary = self._call(self.client.import_tasks, self.settings.review_project,
                                     [review_task(e, self.review) for e in events])
            except LabelStudioError:
                with self._lock:  # try again once a reconcile has listed what the import did save
                    self._tasks = None
                    self._pending.update({e.event_id: e for e in events})
                raise
            self.metrics.tasks.inc(len(events))
            log.info("made %d review tasks in project %d (%s predictions): %s", len(events),
                     self.settings.review_project, (summary or {}).get("prediction_count"),
                     ", ".join(e.event_id[:8] for e in events))
        return len(events)

    def reconcile(self) -> None:
        """Compare both projects with what the topics hold: send what is missing, list the tasks."""
        if self.review:
            listed = self._deduplicate(self._call(self.client.tasks, self.settings.review_project))
            with self._lock:
                self._tasks = {str(t["data"].get("labelwatch_event_id")) for t in listed
                               if isinstance(t.get("data"), dict)}
                for event_id in list(self._pending):
                    if event_id in self._tasks:
                        del self._pending[event_id]
            for task in listed:
                for annotation in task.get("annotations") or ():
                    self.answer(task, annotation)
                self._repair_prediction(task)
        if self.source:
            for task in self._call(self.client.tasks, self.settings.source_project):
                for annotation in task.get("annotations") or ():
                    self.annotation(task, annotation)

    @property
    def needs_listing(self) -> bool:
        """No task can be made before a reconcile lists the review project (at start, after a failed import)."""
        return bool(self.review) and self._tasks is None

    def _deduplicate(self, listed: list[dict]) -> list[dict]:
        """``listed`` without the tasks made twice for one review event, which are deleted from the
        review project. Of one event's tasks the one with the most answers stays (then the oldest);
        a task that holds an answer is never deleted."""
        by_event: dict[str, list[dict]] = {}
        for task in listed:
            data = task.get("data")
            if isinstance(data, dict) and data.get("labelwatch_event_id"):
                by_event.setdefault(str(data["labelwatch_event_id"]), []).append(task)
        extra = set()
        for tasks in by_event.values():
            if len(tasks) > 1:
                keep, *others = sorted(tasks, key=lambda t: (-len(t.get("annotations") or ()), t["id"]))
                extra.update(t["id"] for t in others if not t.get("annotations"))
        for task_id in sorted(extra):
            self._call(self.client.delete_task, task_id)
            self.metrics.duplicate_tasks_deleted.inc()
        if extra:
            log.warning("deleted %d review tasks made twice for one review event (an import that failed after "
                        "Label Studio saved its tasks): %s", len(extra), ", ".join(map(str, sorted(extra))))
        return [t for t in listed if t["id"] not in extra]

    def _repair_prediction(self, task: dict) -> None:
        """Give a review task the prediction it lacks. Label Studio drops every prediction of an
        import when it fails to save one (on SQLite, a write that finds the database locked), and
        keeps the tasks; the task's data holds all that the prediction needs."""
        data = task.get("data")
        prediction = prediction_of(data, self.review) if isinstance(data, dict) else None
        if prediction and not task.get("predictions") and data.get("labelwatch_event_id"):
            self._call(self.client.add_prediction, task["id"], prediction)
            self.metrics.predictions_repaired.inc()

    def _call(self, method, *args):
        try:
            result = method(*args)
        except LabelStudioError as error:
            self.label_studio_error = str(error)
            self.metrics.label_studio_errors.inc()
            raise
        self.label_studio_error = None
        return result

    def _dead_letter(self, raw: bytes, reason: str, key: tuple) -> None:
        with self._lock:
            if key in self._dead:
                return
            letter = DeadLetter.from_bytes(raw, reason=reason, error_type="label_studio")
            self.writer.send(self.settings.dlq_topic, "label-studio", letter.model_dump_json().encode())
            self._dead.add(key)
        self.metrics.dead_letters.inc()
        log.warning("dead-lettered a Label Studio payload: %s", reason)
