"""Where each review event goes: routes by priority or detector, and a review budget per time window.

Routes are ``KEY=TOPIC`` pairs, comma-separated, first match wins; a key is ``priority:N`` or
``detector:NAME`` (the event has a reason from that detector). Unrouted events go to the review
topic. With a budget, at most ``budget`` events per window reach their review topic, the most
urgent of each batch first (priority, then score); the rest go to the deferred topic, from which
they stay retrievable (``labelwatch export --topic``), none is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas import ReviewEvent


@dataclass(frozen=True)
class Route:
    kind: str  # "priority" or "detector"
    value: str
    topic: str

    def matches(self, event: ReviewEvent) -> bool:
        if self.kind == "priority":
            return str(event.priority) == self.value
        return any(reason.detector == self.value for reason in event.reasons)


def parse_routes(text: str) -> list[Route]:
    """``"priority:1=urgent,detector:consensus=disagreements"`` as routes; a clear error otherwise.

    >>> parse_routes("priority:1=urgent, detector:consensus=disagreements")
    [Route(kind='priority', value='1', topic='urgent'), Route(kind='detector', value='consensus', topic='disagreements')]
    """
    routes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, topic = part.partition("=")
        kind, colon, value = key.strip().partition(":")
        if not sep or not colon or kind not in ("priority", "detector") or not value or not topic.strip():
            raise ValueError(f"route {part!r} must look like priority:N=TOPIC or detector:NAME=TOPIC")
        if kind == "priority" and value not in ("1", "2", "3"):
            raise ValueError(f"route {part!r}: priority is 1, 2 or 3")
        routes.append(Route(kind, value.strip(), topic.strip()))
    return routes


class ReviewRouter:
    """Picks each review event's topic.

    >>> from schemas import Reason
    >>> def event(i, priority):
    ...     return ReviewEvent(event_id=str(i), dataset="d", sample_id=str(i), label="a", score=0.5,
    ...                        reasons=[Reason(detector="confident", score=0.5)], priority=priority)
    >>> router = ReviewRouter("reviews", parse_routes("priority:1=urgent"), budget=2, deferred_topic="later")
    >>> [(topic, e.sample_id) for topic, e in router.route([event(1, 3), event(2, 1), event(3, 2)])]
    [('urgent', '2'), ('reviews', '3'), ('later', '1')]
    """

    def __init__(self, review_topic: str, routes: Sequence[Route] = (), *, budget: int = 0,
                 window_s: float = 3600.0, deferred_topic: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.review_topic = review_topic
        self.routes = list(routes)
        self.budget = budget
        self.window_s = window_s
        self.deferred_topic = deferred_topic or f"{review_topic}-deferred"
        self.clock = clock
        self._window_start = clock()
        self._admitted = 0

    @classmethod
    def of(cls, settings) -> ReviewRouter:
        """The router ``labelwatch run``'s settings describe."""
        return cls(settings.review_topic, parse_routes(settings.review_routes), budget=settings.review_budget,
                   window_s=settings.review_budget_window_s, deferred_topic=settings.review_deferred_topic)

    @property
    def topics(self) -> list[str]:
        """Every topic an event may go to: the review topic, the routes', and the deferred one under a budget."""
        names = [self.review_topic, *(route.topic for route in self.routes)]
        return list(dict.fromkeys(names + ([self.deferred_topic] if self.budget else [])))

    def topic_for(self, event: ReviewEvent) -> str:
        return next((route.topic for route in self.routes if route.matches(event)), self.review_topic)

    def route(self, events: Sequence[ReviewEvent]) -> list[tuple[str, ReviewEvent]]:
        """Each event with its topic, the most urgent first."""
        ordered = sorted(events, key=lambda e: (e.priority, -e.score))
        if not self.budget:
            return [(self.topic_for(e), e) for e in ordered]
        now = self.clock()
        if now - self._window_start >= self.window_s:
            self._window_start, self._admitted = now, 0
        routed = []
        for event in ordered:
            if self._admitted < self.budget:
                self._admitted += 1
                routed.append((self.topic_for(event), event))
            else:
                routed.append((self.deferred_topic, event))
        return routed
