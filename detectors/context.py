"""What a reviewer sees next to a flagged sample (:class:`~detectors.assessment.SampleContext`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from detectors.assessment import Assessment, SampleContext
from detectors.base import Batch, Detector

CONTEXT_NEIGHBORS = 5
"""Nearest earlier samples shown with a flagged sample."""


class ReviewContext:
    """The context of flagged samples, from the detectors that offer one: the label mix of the group
    the sample falls in, from the first detector that groups samples (:meth:`Detector.label_mix_of`,
    the clusters by default), and its nearest stored samples from the first that keeps a neighbour index
    (:attr:`Detector.neighbor_index`), taken from the state the sample was judged with.
    """

    def __init__(self, detectors: Sequence[Detector]):
        self.detectors = list(detectors)

    def add(self, assessments: list[Assessment], batch: Batch, arrived: Sequence[int] | None = None,
            arrival: Callable[[], Mapping[str, int]] | None = None) -> list[Assessment]:
        """Each flagged assessment of ``batch`` with its context (one search for all the flagged rows).

        ``arrived`` (each row's stream position, for re-audits) and ``arrival`` (gives every recent
        sample id's) leave out stored samples that arrived after the row's own sample; first verdicts need
        none, since only earlier samples are learned.
        """
        rows = [i for i, a in enumerate(assessments) if a.verdict.flagged]
        if not rows:
            return assessments
        index = next((d.neighbor_index for d in self.detectors if d.neighbor_index is not None), None)
        neighbors: list[list] = [[] for _ in rows]
        if index is not None:
            neighbors = index.nearest(batch.vectors[rows], [batch.ids[i] for i in rows], CONTEXT_NEIGHBORS,
                                      arrival=arrival() if arrived is not None else None,
                                      arrived=[arrived[i] for i in rows] if arrived is not None else None)
        mixes: list[dict] = [{} for _ in rows]
        for detector in self.detectors:
            found = detector.label_mix_of(batch.vectors[rows], [assessments[i].signals.get(detector.name) for i in rows])
            if found is not None:
                mixes = found
                break
        out = list(assessments)
        for i, mix, near in zip(rows, mixes, neighbors):
            out[i] = replace(out[i], context=SampleContext(mix, tuple(near)))
        return out
