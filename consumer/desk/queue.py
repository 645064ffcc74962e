"""The review queue as the desk sees it: events, answers and leases, all read back from Kafka.

Nothing here does I/O. :class:`ReviewQueue` is a view rebuilt from three topics, so every desk
replica that has read the same records shows the same queue:

- **events** (the review topic): what to review, most urgent first;
- **answers** (the corrections topic): a ``confirmed`` or ``false_alarm`` answer closes every
  event of its sample; a ``skip`` hides the event from that reviewer only;
- **leases** (the leases topic): the first claim in log order holds an event until it expires.
  Whether a later claim lost is decided by its record's timestamp against the holder's expiry, so
  every replica decides the same.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timezone

from schemas import Correction, ReviewEvent

CLOSING = ("confirmed", "false_alarm")
SUSPECT_BANDS = (0.01, 0.05, 0.10, 0.25, 1.0)
"""The score bands reviewers' precision is counted in, by how suspect an event was among its dataset's
recent samples (``ReviewEvent.suspect_share``): the top 1%, 1–5%, 5–10%, 10–25%, and the rest."""


def band_of(share: float) -> tuple[float, float]:
    """The band ``(above, up to)`` of :data:`SUSPECT_BANDS` that a ``suspect_share`` falls in.

    >>> band_of(0.004), band_of(0.05), band_of(0.3)
    ((0.0, 0.01), (0.01, 0.05), (0.25, 1.0))
    """
    above = 0.0
    for bound in SUSPECT_BANDS:
        if share <= bound:
            return above, bound
        above = bound
    return above, 1.0


@dataclass(frozen=True)
class Lease:
    """``reviewer_id`` holds ``event_id`` until ``expires_at`` (epoch seconds); ``lease_id`` names this claim."""

    event_id: str
    reviewer_id: str
    lease_id: str
    expires_at: float


@dataclass(frozen=True)
class Filters:
    """What a reviewer asked to see; ``None`` is any."""

    dataset: str | None = None
    detector: str | None = None
    label: str | None = None

    def admit(self, event: ReviewEvent) -> bool:
        return ((self.dataset is None or event.dataset == self.dataset)
                and (self.label is None or event.label == self.label)
                and (self.detector is None or any(r.detector == self.detector for r in event.reasons)))


@dataclass
class Progress:
    """One dataset's queue at a glance."""

    open: int = 0
    answered_today: int = 0
    confirmed: int = 0
    false_alarms: int = 0

    @property
    def confirmed_share(self) -> float | None:
        answered = self.confirmed + self.false_alarms
        return self.confirmed / answered if answered else None


class ReviewQueue:
    """Open review events, most urgent first (priority, then score), with answers and leases applied.

    >>> from schemas import Reason
    >>> queue = ReviewQueue()
    >>> for i, score in enumerate([0.7, 0.95]):
    ...     queue.add_event(ReviewEvent(event_id=f"e{i}", dataset="pets", sample_id=f"s{i}", label="cat",
    ...                                 score=score, reasons=[Reason(detector="cluster", score=score)]))
    >>> [e.event_id for e in queue.open_items()]
    ['e1', 'e0']
    >>> queue.add_lease(Lease("e1", "ana", "l1", expires_at=100.0), at=10.0)
    True
    >>> queue.add_lease(Lease("e1", "bo", "l2", expires_at=105.0), at=11.0)  # ana holds it: bo's claim loses
    False
    >>> [e.event_id for e in queue.open_items(reviewer="bo", now=50.0)], [e.event_id for e in queue.open_items(reviewer="ana", now=50.0)]
    (['e0'], ['e1', 'e0'])
    >>> queue.add_answer(Correction(dataset="pets", sample_id="s1", outcome="false_alarm", event_id="e1"))
    >>> [e.event_id for e in queue.open_items()]
    ['e0']
    """

    def __init__(self, *, max_texts: int = 100_000):
        self._lock = threading.RLock()
        self._events: dict[str, ReviewEvent] = {}
        self._by_sample: dict[tuple[str, str], set[str]] = {}
        self._closed: dict[str, Correction] = {}
        self._skipped: dict[str, set[str]] = {}
        self._leases: dict[str, Lease] = {}
        self._answers: dict[tuple, Correction] = {}
        self._labels: dict[str, set[str]] = {}
        self._texts: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._max_texts = max_texts

    # -- what the feed applies, in log order ------------------------------------------------
    def add_event(self, event: ReviewEvent) -> None:
        with self._lock:
            self._events[event.event_id] = event
            self._by_sample.setdefault((event.dataset, event.sample_id), set()).add(event.event_id)
            known = self._labels.setdefault(event.dataset, set())
            known.update(label for label in (event.label, event.suggested_label) if label)
            if event.context:
                known.update(event.context.cluster_labels)
                known.update(n.label for n in event.context.neighbors)
            if event.text:
                self._remember_text(event.dataset, event.sample_id, event.text)

    def add_answer(self, answer: Correction) -> None:
        """Apply an answer; the same answer read twice (written here, then read back) counts once."""
        key = (answer.dataset, answer.sample_id, answer.event_id, answer.reviewer_id, answer.outcome,
               answer.corrected_label, answer.answered_at)
        with self._lock:
            if key in self._answers:
                return
            self._answers[key] = answer
            if answer.corrected_label:
                self._labels.setdefault(answer.dataset, set()).add(answer.corrected_label)
            targets = {answer.event_id} if answer.event_id else set()
            if answer.outcome in CLOSING or not answer.event_id:
                targets |= self._by_sample.get((answer.dataset, answer.sample_id), set())
            for event_id in targets:
                if answer.outcome in CLOSING:
                    self._closed.setdefault(event_id, answer)
                elif answer.reviewer_id:
                    self._skipped.setdefault(event_id, set()).add(answer.reviewer_id)

    def add_lease(self, lease: Lease, *, at: float) -> bool:
        """Apply a claim whose record was written at ``at``; returns whether it holds the event now."""
        with self._lock:
            holder = self._leases.get(lease.event_id)
            if (holder is not None and holder.reviewer_id != lease.reviewer_id and at < holder.expires_at
                    and holder.reviewer_id not in self._skipped.get(lease.event_id, ())):
                return False
            self._leases[lease.event_id] = lease
            return True

    def add_text(self, dataset: str, sample_id: str, text: str) -> None:
        """Remember an annotated sample's text (the input topic), to show it as a neighbour."""
        with self._lock:
            self._remember_text(dataset, sample_id, text)

    def _remember_text(self, dataset: str, sample_id: str, text: str) -> None:
        self._texts[(dataset, sample_id)] = text
        self._texts.move_to_end((dataset, sample_id))
        while len(self._texts) > self._max_texts:
            self._texts.popitem(last=False)

    # -- what the page and the API read --------------------------------------------------------
    def event(self, event_id: str) -> ReviewEvent | None:
        return self._events.get(event_id)

    def answer_of(self, event_id: str) -> Correction | None:
        """The answer that closed ``event_id``, if any."""
        return self._closed.get(event_id)

    def holder(self, event_id: str, now: float) -> Lease | None:
        """The live lease on ``event_id``: not expired, and its holder has not skipped it."""
        with self._lock:
            lease = self._leases.get(event_id)
            if lease is None or now >= lease.expires_at or lease.reviewer_id in self._skipped.get(event_id, ()):
                return None
            return lease

    def is_open_to(self, event_id: str, reviewer: str | None, now: float) -> bool:
        """Unanswered, not skipped by ``reviewer``, and not leased to someone else."""
        with self._lock:
            if event_id not in self._events or event_id in self._closed:
                return False
            if reviewer is not None and reviewer in self._skipped.get(event_id, ()):
                return False
            lease = self.holder(event_id, now)
            return lease is None or reviewer is None or lease.reviewer_id == reviewer

    def open_items(self, filters: Filters = Filters(), *, reviewer: str | None = None,
                   now: float = 0.0) -> list[ReviewEvent]:
        """Open events ``filters`` admits, most urgent first: priority, then score, then arrival.

        With a ``reviewer``, those leased to others and those the reviewer skipped are left out.
        """
        with self._lock:
            events = [e for e in self._events.values()
                      if filters.admit(e) and self.is_open_to(e.event_id, reviewer, now)]
        return sorted(events, key=lambda e: (e.priority, -e.score))

    def held_by(self, reviewer: str, filters: Filters, now: float) -> ReviewEvent | None:
        """The open event ``reviewer`` holds a live lease on, if ``filters`` admits it."""
        with self._lock:
            for event_id, lease in self._leases.items():
                event = self._events.get(event_id)
                if (lease.reviewer_id == reviewer and event is not None and filters.admit(event)
                        and event_id not in self._closed and self.holder(event_id, now) is lease):
                    return event
        return None

    def labels(self, dataset: str) -> list[str]:
        """Every label seen in ``dataset``: given, suggested, in clusters, neighbours and corrections."""
        return sorted(self._labels.get(dataset, ()))

    def datasets(self) -> list[str]:
        return sorted(self._labels)

    def text_of(self, dataset: str, sample_id: str) -> str | None:
        return self._texts.get((dataset, sample_id))

    def band_precision(self, dataset: str, band: tuple[float, float]) -> tuple[int, int]:
        """``(confirmed, answered)``: the dataset's answered events of that score band (:func:`band_of`) that
        reviewers confirmed wrong, and all those they answered (confirmed or false alarm)."""
        confirmed = answered = 0
        with self._lock:
            for answer in self._answers.values():
                event = self._events.get(answer.event_id) if answer.event_id else None
                if (answer.outcome in CLOSING and event is not None and event.dataset == dataset
                        and event.suspect_share is not None and band_of(event.suspect_share) == band):
                    answered += 1
                    confirmed += answer.outcome == "confirmed"
        return confirmed, answered

    def progress(self, today: date | None = None) -> dict[str, Progress]:
        """Per dataset: open events, answers today (UTC), and confirmed against false alarms."""
        today = today or datetime.now(timezone.utc).date()
        with self._lock:
            out = {dataset: Progress() for dataset in self._labels}
            for event_id, event in self._events.items():
                if event_id not in self._closed:
                    out.setdefault(event.dataset, Progress()).open += 1
            for answer in self._answers.values():
                if answer.outcome not in CLOSING:
                    continue
                row = out.setdefault(answer.dataset, Progress())
                if answer.outcome == "confirmed":
                    row.confirmed += 1
                else:
                    row.false_alarms += 1
                if answer.answered_at and answer.answered_at.astimezone(timezone.utc).date() == today:
                    row.answered_today += 1
        return out
