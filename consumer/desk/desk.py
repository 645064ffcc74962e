"""What a reviewer can do at the desk: take the next item (a lease) and answer it (a Correction)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pydantic import ValidationError

from consumer.desk.feed import Writer
from consumer.tailing import TopicReader
from consumer.desk.metrics import DeskMetrics
from consumer.desk.queue import Filters, ReviewQueue
from schemas import CORRECTION_VERSION, Correction, ReviewEvent

CLAIM_ATTEMPTS = 5
"""Items tried in turn when other reviewers keep claiming the same ones first."""


class Refused(ValueError):
    """An answer that cannot be taken, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ReviewDesk:
    """The queue, read from Kafka, and the writes that change it."""

    def __init__(self, queue: ReviewQueue, feed: TopicReader, writer: Writer, metrics: DeskMetrics, *, lease_seconds: float):
        self.queue = queue
        self.feed = feed
        self.writer = writer
        self.metrics = metrics
        self.lease_seconds = lease_seconds

    def open_items(self, reviewer: str, filters: Filters = Filters()) -> list[ReviewEvent]:
        """What ``reviewer`` may take: open, not skipped by them, not leased to anyone else."""
        return self.queue.open_items(filters, reviewer=reviewer, now=time.time())

    def take(self, reviewer: str, filters: Filters = Filters()) -> ReviewEvent | None:
        """The item ``reviewer`` works on now: the one they hold (renewed once half its lease is
        gone), or the most urgent one they can lease.

        A lease is a record on the leases topic. It holds only if it is the first live claim on the
        event in the topic's order, which the desk learns by reading its own record back.
        """
        now = time.time()
        held = self.queue.held_by(reviewer, filters, now)
        if held is not None:
            if self.queue.holder(held.event_id, now).expires_at - now < self.lease_seconds / 2:
                self.writer.lease(held.event_id, reviewer, self.lease_seconds)  # still at it: renew
            return held
        for event in self.open_items(reviewer, filters)[:CLAIM_ATTEMPTS]:
            lease, partition, offset = self.writer.lease(event.event_id, reviewer, self.lease_seconds)
            if not self.feed.wait_applied(self.writer.settings.leases_topic, partition, offset, timeout=10.0):
                return None  # not read back in time: show nothing rather than an item that may be someone else's
            holder = self.queue.holder(event.event_id, time.time())
            if holder is not None and holder.lease_id == lease.lease_id:
                return event
            self.metrics.lost_claims.inc()
        return None

    def answer(self, reviewer: str, event_id: str, outcome: str, corrected_label: str | None = None) -> Correction:
        """Write ``reviewer``'s answer to ``event_id`` as a Correction, once the broker acknowledges it.

        ``confirmed`` without a label takes the suggested one; ``confirmed`` with the sample's own
        label is refused (that is a false alarm).
        """
        event = self.queue.event(event_id)
        if event is None:
            raise Refused(404, f"no review event {event_id!r} (or the desk has not read it yet)")
        if self.queue.answer_of(event_id) is not None:
            raise Refused(409, "this event is already answered")
        holder = self.queue.holder(event_id, time.time())
        if holder is not None and holder.reviewer_id != reviewer:
            raise Refused(409, "another reviewer has this event open")
        if outcome == "confirmed":
            corrected_label = corrected_label or event.suggested_label
            if corrected_label == event.label:
                raise Refused(422, "the corrected label is the label given: answer false_alarm instead")
        try:
            correction = Correction(dataset=event.dataset, sample_id=event.sample_id, outcome=outcome,
                                    corrected_label=corrected_label, event_id=event_id, reviewer_id=reviewer,
                                    answered_at=datetime.now(timezone.utc), schema_version=CORRECTION_VERSION)
        except ValidationError as error:
            raise Refused(422, "; ".join(e["msg"] for e in error.errors())) from None
        self.writer.answer(correction)
        self.queue.add_answer(correction)  # read back later too; counted once
        self.metrics.answers.labels(dataset=event.dataset, reviewer=reviewer, outcome=outcome).inc()
        return correction
