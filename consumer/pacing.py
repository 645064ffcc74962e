"""How much work one poll may take: a poll's records fit well inside ``max_poll_interval_ms``.

A consumer group evicts a member that does not poll again within ``max_poll_interval_ms``; its
partitions move and the batch it was working on is replayed. A record's cost varies a hundredfold
(a precomputed vector against a text to embed) and with the machine's load, so no fixed
``max_poll_records`` suits both. :class:`PollPacer` measures the cost as it goes and bounds each
poll's work by time instead:

- the next poll asks for no more records than fit in the budget at the measured cost;
- a poll expected to take more than a quarter of the budget is worked in chunks, and once the
  budget is spent the service hands the remaining records back (it seeks to them), so the next
  poll brings them again. A sudden slowdown costs at most one chunk past the budget.

Verdicts do not depend on how polls cut the stream (docs/reliability.md), so the cut is invisible
downstream.
"""

from __future__ import annotations

WORK_SHARE = 0.25
"""Share of ``max_poll_interval_ms`` one poll's work may take; the rest is headroom for delivery,
checkpoints and a machine that slows down mid-poll."""

CHUNKS_PER_BUDGET = 4


class PollPacer:
    """Sizes polls and chunks from the measured seconds per record.

    The estimate rises at once when work gets slower and falls back gradually when it gets faster,
    so a busy machine shrinks the very next poll.

    >>> pacer = PollPacer(budget_s=2.0, max_records=500)
    >>> pacer.poll_records()  # nothing measured yet: start small
    16
    >>> pacer.observe(100, 10.0)  # a text model on a busy machine: 0.1 s per record
    >>> pacer.poll_records(), pacer.chunk_records()
    (20, 5)
    >>> pacer.observe(500, 0.5)  # vectors: 1 ms per record; the estimate falls back gradually
    >>> pacer.poll_records() > 20
    True
    """

    def __init__(self, budget_s: float, max_records: int, *, start_records: int = 16, smoothing: float = 0.3):
        self.budget_s = budget_s
        self.max_records = max_records
        self.start_records = min(start_records, max_records)
        self.smoothing = smoothing
        self.seconds_per_record: float | None = None

    @classmethod
    def for_poll_interval(cls, max_poll_interval_ms: int, max_records: int) -> PollPacer:
        return cls(max_poll_interval_ms / 1000 * WORK_SHARE, max_records)

    def observe(self, records: int, seconds: float) -> None:
        """Record that ``records`` took ``seconds`` to process."""
        if records <= 0:
            return
        cost = max(seconds, 0.0) / records
        if self.seconds_per_record is None or cost > self.seconds_per_record:
            self.seconds_per_record = cost
        else:
            self.seconds_per_record += self.smoothing * (cost - self.seconds_per_record)

    def _fitting(self, seconds: float) -> int:
        if self.seconds_per_record is None:
            return self.start_records
        if self.seconds_per_record <= 0:
            return self.max_records
        return max(1, min(self.max_records, int(seconds / self.seconds_per_record)))

    def poll_records(self) -> int:
        """Records to ask the next poll for."""
        return self._fitting(self.budget_s)

    def chunk_records(self) -> int:
        """Records to process between two looks at the clock."""
        return self._fitting(self.budget_s / CHUNKS_PER_BUDGET)

    def spent(self, seconds: float) -> bool:
        """Whether a poll that has worked ``seconds`` must hand the rest of its records back."""
        return seconds >= self.budget_s
