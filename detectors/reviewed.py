"""Reviewers' answers on flags: the share they confirmed, which corrects the error-rate estimate."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class ConfirmedShare:
    """The share of the last ``window`` answered flags that reviewers confirmed as label errors,
    smoothed by ``prior`` pseudo-confirmations: with no answers it is 1, and a few answers move it little.

    Where classes overlap, the labels alone cannot tell a dataset's own ambiguity from label noise,
    and an estimate from them counts both (on overlapping text, 0.16 at a true 0.10). Reviewers can:
    the error-rate estimate is multiplied by :attr:`correction`, so the flag budgets shrink where
    reviewers keep answering "false alarm", and stay where they confirm.

    >>> share = ConfirmedShare(prior=10)
    >>> share.value, share.correction
    (1.0, 1.0)
    >>> for outcome in ["confirmed"] * 10 + ["false_alarm"] * 30:
    ...     share.add(outcome)
    >>> share.n_answers, round(share.value, 3), round(share.correction, 3)
    (40, 0.4, 0.632)
    >>> share = ConfirmedShare(prior=0, window=2)  # the last two answers only
    >>> for outcome in ["confirmed", "false_alarm", "false_alarm"]:
    ...     share.add(outcome)
    >>> share.n_confirmed, share.value
    (0, 0.0)
    """

    prior: float = 10.0
    window: int = 2000
    answers: deque = field(default_factory=deque, repr=False)  # True: confirmed
    n_confirmed: int = 0  # among ``answers`` (the budgets ask for the share once per flag)

    def add(self, outcome: str) -> None:
        """Record one answer: ``confirmed`` or ``false_alarm`` (others, such as ``skip``, say nothing)."""
        if outcome not in ("confirmed", "false_alarm"):
            return
        self.answers.append(outcome == "confirmed")
        self.n_confirmed += outcome == "confirmed"
        while len(self.answers) > self.window:
            self.n_confirmed -= self.answers.popleft()

    @property
    def n_answers(self) -> int:
        return len(self.answers)

    @property
    def value(self) -> float:
        return (self.n_confirmed + self.prior) / (len(self.answers) + self.prior)

    @property
    def correction(self) -> float:
        """The factor for the error-rate estimate: the square root of :attr:`value`.

        The share itself over-corrects. Flags are the most suspect samples, where an estimate from the
        labels alone is most over-confident, and even a right estimate ranks some clean samples among
        them, so their confirmed share is below the share of the estimate that is real noise (with an
        always-right reviewer, the share times the estimate said 0.06 to 0.08 at a true 0.10 on text).
        The root, half the correction on a log scale, came within 0.035 of the true rate on every text
        row (docs/detection.md, "Reviewers' answers")."""
        return self.value ** 0.5
