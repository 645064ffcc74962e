"""Combining the detectors' signals into one score and one verdict per sample."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from detectors.base import Signal

_VOTE = re.compile(r"^vote:(\d+)$")


@dataclass(frozen=True)
class Combiner:
    """A policy over per-detector verdicts: ``union``, ``intersection`` or ``vote:K``.

    - ``union`` flags when any detector flags (catch more); the score is the highest.
    - ``intersection`` flags when every detector flags (be sure); the score is the lowest.
    - ``vote:K`` flags when at least K detectors flag; the score is the K-th highest.

    The suggested label comes from the most suspicious flagging detector.

    >>> signals = {"cluster": Signal(0.9, True, "b"), "model": Signal(0.4, False)}
    >>> Combiner.parse("union").combine(signals).flagged
    True
    >>> Combiner.parse("intersection").combine(signals).flagged
    False
    >>> verdict = Combiner.parse("vote:1").combine(signals)
    >>> (verdict.flagged, verdict.score, verdict.suggested_label)
    (True, 0.9, 'b')
    """

    policy: str
    k: int = 1

    @classmethod
    def parse(cls, text: str) -> Combiner:
        text = text.strip().lower()
        if text in ("union", "intersection"):
            return cls(text)
        match = _VOTE.match(text)
        if match and int(match.group(1)) >= 1:
            return cls("vote", int(match.group(1)))
        raise ValueError(f"unknown combine policy {text!r}: use 'union', 'intersection' or 'vote:K' (K >= 1)")

    def __str__(self) -> str:
        return f"vote:{self.k}" if self.policy == "vote" else self.policy

    def combine(self, signals: Mapping[str, Signal]) -> Signal:
        if not signals:  # no voter spoke (evidence such as consensus exists for some samples only)
            return Signal(0.0, False, None, {"policy": str(self), "n_flagged": 0})
        if len(signals) == 1:  # one voter (the default): every policy agrees with it; the common, hot path
            (only,) = signals.values()
            flagged = bool(only.flagged) and (self.policy != "vote" or self.k <= 1)
            return Signal(float(only.score), flagged, (only.suggested_label or None) if only.flagged else None,
                          {"policy": str(self), "n_flagged": int(only.flagged)})
        return self._combine_any(signals)

    def _combine_any(self, signals: Mapping[str, Signal]) -> Signal:
        """The rule for any number of signals (:meth:`combine` shortcuts a single one)."""
        scores = sorted((s.score for s in signals.values()), reverse=True)
        n_flagged = sum(s.flagged for s in signals.values())
        if self.policy == "union":
            flagged, score = n_flagged >= 1, scores[0]
        elif self.policy == "intersection":
            flagged, score = n_flagged == len(signals), scores[-1]
        else:
            flagged, score = n_flagged >= self.k, scores[min(self.k, len(scores)) - 1]
        flaggers = sorted((s for s in signals.values() if s.flagged and s.suggested_label),
                          key=lambda s: s.score, reverse=True)
        suggested = flaggers[0].suggested_label if flaggers else None
        return Signal(float(score), bool(flagged), suggested, {"policy": str(self), "n_flagged": n_flagged})
