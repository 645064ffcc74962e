"""Export review events for annotation tools: a review queue as JSONL, or Label Studio tasks.

Label Studio imports a JSON list of tasks; each task here carries the sample in ``data``, the
evidence in ``meta``, and labelwatch's suggested label as a **pre-annotation** (``predictions``),
for a labelling config with ``<Choices name="label" toName="text">``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from typing import IO

from kafka import KafkaConsumer

from schemas import ReviewEvent


def review_queue(events: Iterable[ReviewEvent]) -> list[ReviewEvent]:
    """One event per sample and label (the first of replayed duplicates), most urgent first."""
    unique = {event.event_id: event for event in reversed(list(events))}
    return sorted(unique.values(), key=lambda e: (e.priority, -e.score, e.dataset, e.sample_id))


def label_studio_task(event: ReviewEvent) -> dict:
    """A Label Studio task with the suggested label as a pre-annotation.

    >>> from schemas import Reason
    >>> event = ReviewEvent(event_id="e1", dataset="pets", sample_id="p7", label="cat", suggested_label="dog",
    ...                     score=0.9, reasons=[Reason(detector="confident", score=0.9)], text="a puppy")
    >>> task = label_studio_task(event)
    >>> task["data"]["text"], task["predictions"][0]["result"][0]["value"]
    ('a puppy', {'choices': ['dog']})
    """
    suggestion = event.suggested_label or event.label
    return {
        "data": {"text": event.text if event.text is not None else f"{event.dataset}/{event.sample_id}",
                 "sample_id": event.sample_id, "dataset": event.dataset, "given_label": event.label},
        "meta": {"event_id": event.event_id, "score": event.score, "priority": event.priority,
                 "annotator_id": event.annotator_id, "reasons": [r.detector for r in event.reasons]},
        "predictions": [{"model_version": "labelwatch", "score": event.score,
                         "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                     "value": {"choices": [suggestion]}}]}],
    }


def write(events: Iterable[ReviewEvent], out: IO[str], fmt: str) -> int:
    """Write the review queue as ``jsonl`` (ReviewEvents) or ``labelstudio`` (a JSON list of tasks)."""
    queue = review_queue(events)
    if fmt == "labelstudio":
        json.dump([label_studio_task(e) for e in queue], out, indent=1)
        out.write("\n")
    elif fmt == "jsonl":
        out.writelines(e.model_dump_json() + "\n" for e in queue)
    else:
        raise ValueError(f"unknown export format {fmt!r}: jsonl or labelstudio")
    return len(queue)


def read_topic(kafka_config: dict, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning, waiting up to ``timeout`` s for ``expected`` of them."""
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1500, **kafka_config)
    records, deadline = [], time.monotonic() + timeout
    with contextlib.closing(consumer):
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
    return records
