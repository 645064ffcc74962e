"""The flag budget of one dataset: no more flags in all than the label errors estimated, and half of
that while streaming."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from detectors.assessment import Assessment
from detectors.base import Signal  # noqa: F401 (the examples)

LIVE_SHARE = 0.5
"""The share of the estimated label errors that flags sent while streaming may spend; the rest is kept
for the final re-audit at the end of an input (``audit``, ``evaluate``, the demo), whose evidence is
complete. On text, flags sent while streaming were right 0.32–0.45 of the time; on tweets u20, those
the final re-audit added were right 0.61 of the time. With reviewers' answers, half (against all)
took tweets F1 from 0.527 to 0.593 (u10), 0.426 to 0.618 (u20) and 0.430 to 0.469 (p20); no other
row moved by more than 0.004, with answers or without (docs/detection.md)."""


def allowance(rate: float | None, n: int) -> float | None:
    """How many flags ``n`` samples allow at an estimated error ``rate`` (``None``: no estimate, no limit):
    the estimate, its own uncertainty (two binomial standard deviations), and one, so that a flagrant
    error on a stream that looked clean so far still gets through.

    >>> round(allowance(0.1, 100), 1), allowance(None, 100)
    (17.0, None)
    """
    if rate is None:
        return None
    return rate * n + 2 * math.sqrt(n * rate * (1 - rate)) + 1


@dataclass
class FlagBudget:
    """First verdicts and re-audits share one budget: no more flags while streaming than
    :data:`LIVE_SHARE` of the label errors estimated among the samples seen, within the estimate's
    uncertainty (:func:`allowance`); no more in all, with the final re-audit, than the errors estimated.
    A withdrawn flag is not lost: its sample stays in the re-audit window, and a later re-audit may
    flag it once the budget allows.

    Replays must decide alike however polls cut the stream, and re-audits interleave with first
    verdicts differently for different cuts. So each kind spends against what was spent up to the
    last learning step (``at_step``), plus its own flags since (``first``, ``late``), counted in an
    order no cut changes: first verdicts in stream order, re-audits in queue order. Between two
    steps the two together may overshoot by what each spent since; :meth:`settle` (every step)
    settles the account.

    >>> budget = FlagBudget()
    >>> flagged = Assessment(Signal(0.9, True), {})
    >>> kept = budget.within([flagged] * 3, late=False, allowance=lambda n: 2.5, first_position=0)
    >>> [a.verdict.flagged for a in kept], budget.n_flagged_live
    ([True, True, False], 2)
    """

    n_flagged_live: int = 0  # flags sent while streaming (first verdicts and re-audits)
    account: dict = field(default_factory=lambda: {"at_step": 0, "first": 0, "late": 0})

    def within(self, assessments: list[Assessment], *, late: bool, allowance: Callable[[int], float | None],
               first_position: int) -> list[Assessment]:
        """``assessments`` with the flags beyond the budget withdrawn. First verdicts (``late=False``)
        are of the samples at stream positions ``first_position`` on, each allowed ``allowance(n)``
        for the ``n`` samples seen with it; re-audits get the allowance of ``first_position``."""
        if not any(a.verdict.flagged for a in assessments):
            return assessments
        kind = "late" if late else "first"
        kept = []
        for i, assessment in enumerate(assessments):
            if assessment.verdict.flagged:
                allowed = allowance(first_position if late else first_position + i + 1)
                if allowed is not None and self.account["at_step"] + self.account[kind] + 1 > allowed:
                    assessment = assessment.withdrawn(over_budget=round(allowed, 1))
                else:
                    self.account[kind] += 1
                    self.n_flagged_live += 1
            kept.append(assessment)
        return kept

    def within_final(self, assessments: list[Assessment], allowed: float | None) -> list[Assessment]:
        """The final re-audit's share: what streaming left of ``allowed`` flags in all; beyond it, the
        flags with the lowest scores are withdrawn (ties: the later sample)."""
        flagged = [i for i, a in enumerate(assessments) if a.verdict.flagged]
        if allowed is None or self.n_flagged_live + len(flagged) <= allowed:
            return assessments
        room = max(0, math.floor(allowed) - self.n_flagged_live)
        kept = set(sorted(flagged, key=lambda i: (-assessments[i].verdict.score, i))[:room])
        return [a if not a.verdict.flagged or i in kept else a.withdrawn(over_budget=round(allowed, 1))
                for i, a in enumerate(assessments)]

    def settle(self) -> None:
        """A learning step: the account starts again from every flag sent so far."""
        self.account = {"at_step": self.n_flagged_live, "first": 0, "late": 0}
