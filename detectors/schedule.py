"""When each judged sample is re-audited: the window of recent samples, and the queue of re-audits due."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from detectors.assessment import Assessment

REAUDIT_GROWTH = 4
"""Each re-audit of a sample waits this many times longer than the previous one."""


@dataclass(slots=True)
class Judged:
    """A judged sample as the monitor remembers it: what it was judged on, its latest assessment, its
    stream position (``arrived``) and when its next re-audit is ``due`` (in samples learned)."""

    vector: np.ndarray
    label: str
    user_proba: Any
    sample_id: str
    payload: Any
    assessment: Assessment
    arrived: int
    due: int
    excluded: bool = False  # a reviewer confirmed the label wrong before it was learned, and gave no better one
    annotated: str | None = None  # the label as annotated, where a reviewer changed it before it was learned
    reviewed_copy: bool = False  # a reviewer's corrected copy of a sample learned before

    def __setstate__(self, state: tuple[dict | None, dict]) -> None:
        """Pickle's state of a slotted object; fields an older release's checkpoint lacks take their defaults."""
        values = {**(state[0] or {}), **(state[1] or {})}
        for f in fields(self):
            object.__setattr__(self, f.name, values.get(f.name, f.default))


class ReauditSchedule:
    """The last ``window`` judged samples, and the re-audits of the clean ones that are due.

    A sample is first re-audited once ``delay`` samples newer than it are learned, then at
    :data:`REAUDIT_GROWTH` times that age, and so on while it is in the window. :meth:`queue_due`
    (at each learning step) queues the due ones; :meth:`take` hands them out in queue order. With
    deferred re-audits each batch owes its share of the queue (:meth:`owe`), run once its first
    verdicts are out.

    >>> schedule = ReauditSchedule(window=3, delay=1)
    >>> schedule.admit([Judged(None, "a", None, str(i), None, None, i, i + 1) for i in range(4)])
    >>> [j.sample_id for j in schedule.window]
    ['1', '2', '3']
    >>> [j.sample_id for j in schedule.queue_due(n_learned=3, clean=lambda j: True)]
    ['1', '2']
    """

    def __init__(self, window: int = 10_000, delay: int = 250) -> None:
        self.window_size, self.delay = window, delay
        self.window: deque[Judged] = deque()
        self.due: list[Judged] = []  # re-audits of the last learned step not run yet
        self.owed = 0  # of those, the share the batches judged since asked for

    def __repr__(self) -> str:
        return f"ReauditSchedule(window={self.window_size}, delay={self.delay}, due={len(self.due)})"

    def admit(self, judged: Iterable[Judged]) -> None:
        """Remember newly judged samples; the oldest leave the window beyond its size."""
        self.window.extend(judged)
        while len(self.window) > self.window_size:
            self.window.popleft()

    def first_due(self, arrived: int) -> int:
        """When a sample judged at stream position ``arrived`` is first re-audited."""
        return arrived + max(self.delay, 1)

    def queue_due(self, n_learned: int, clean) -> list[Judged]:
        """Queue (and return) the re-audits due once ``n_learned`` samples are learned: the samples of the
        window that are ``clean(sample)`` and due by then; each one's next is :data:`REAUDIT_GROWTH` times older."""
        due = [j for j in self.window if clean(j) and j.due <= n_learned]
        for judged in due:
            judged.due = judged.arrived + REAUDIT_GROWTH * (judged.due - judged.arrived)
        self.due, self.owed = due, 0
        return due

    def take(self, max_samples: int | None = None) -> list[Judged]:
        """Up to ``max_samples`` (default: all) of the queued re-audits, first queued first."""
        count = len(self.due) if max_samples is None else max(0, max_samples)
        now, self.due = self.due[:count], self.due[count:]
        self.owed = max(0, min(self.owed - len(now), len(self.due)))
        return now

    def owe(self, n_judged: int, until_step: int) -> None:
        """A batch of ``n_judged`` samples, ``until_step`` samples before the next step, owes its share of the queue."""
        if self.due:
            share = -(-(len(self.due) - self.owed) * n_judged // (n_judged + until_step))
            self.owed = min(len(self.due), self.owed + share)

    def find(self, sample_id: str) -> Judged | None:
        """The latest judged sample of that id still in the window."""
        return next((j for j in reversed(self.window) if j.sample_id == sample_id), None)

    def arrival(self) -> dict[str, int]:
        """Each sample id's stream position (a later annotation of an id overwrites: its latest counts)."""
        return {j.sample_id: j.arrived for j in self.window}

    def recent(self, n: int) -> list[Judged]:
        """The last ``n`` samples of the window, oldest first. Safe to call from another thread than the
        one processing: it copies the window, retrying if a batch changes it meanwhile."""
        for _ in range(10):
            try:
                return list(self.window)[-n:] if n > 0 else []
            except RuntimeError:  # deque mutated during iteration
                continue
        return []
