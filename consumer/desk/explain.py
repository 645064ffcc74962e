"""A review event's evidence in words, for the reviewer."""

from __future__ import annotations

import math
from collections import Counter

from schemas import Reason, ReviewEvent


def in_words(event: ReviewEvent) -> list[str]:
    """One sentence per reason, then one about the nearest earlier samples when the event has them.

    >>> from schemas import Neighbor, ReviewContext
    >>> event = ReviewEvent(event_id="e", dataset="d", sample_id="s", label="4", suggested_label="6", score=0.9,
    ...     reasons=[Reason(detector="cluster", score=0.9, details={"cluster_size": 20, "majority_label": "6",
    ...                                                               "majority_share": 0.85})],
    ...     context=ReviewContext(neighbors=[Neighbor(sample_id=str(i), label="6" if i else "4", similarity=0.9)
    ...                                      for i in range(10)]))
    >>> for line in in_words(event): print(line)
    17 of the 20 samples in its cluster are labelled 6.
    9 of its 10 nearest earlier samples are labelled 6.
    """
    lines = [_reason(reason, event) for reason in event.reasons]
    if event.context and event.context.neighbors:
        votes = Counter(n.label for n in event.context.neighbors)
        label, count = votes.most_common(1)[0]
        lines.append(f"{count} of its {len(event.context.neighbors)} nearest earlier samples are labelled {label}.")
    return lines


def suspect_in_words(share: float) -> str:
    """How suspect an event is among its dataset's recent samples (``ReviewEvent.suspect_share``), in words.

    >>> [suspect_in_words(s) for s in (0.0004, 0.012, 0.05, 0.31)]
    ['top 0.1% most suspect', 'top 2% most suspect', 'top 5% most suspect', 'top 31% most suspect']
    """
    percent = 100 * share
    shown = f"{max(math.ceil(percent * 10) / 10, 0.1):g}" if percent < 1 else f"{math.ceil(percent - 1e-9):d}"
    return f"top {shown}% most suspect"


def band_in_words(band: tuple[float, float]) -> str:
    """A score band of :func:`~consumer.desk.queue.band_of` in words.

    >>> band_in_words((0.0, 0.01)), band_in_words((0.05, 0.1))
    ('the top 1%', 'the top 5–10%')
    """
    above, upto = (f"{100 * b:g}" for b in band)
    return f"the top {upto}%" if band[0] == 0 else f"the top {above}–{upto}%"


def score_in_words(score: float) -> str:
    """A score to 4 significant digits (``1.000`` stays ``1.000``, not ``1``).

    >>> score_in_words(0.99962), score_in_words(1.0), score_in_words(0.0123456)
    ('0.9996', '1.000', '0.01235')
    """
    return f"{score:#.4g}"


def _reason(reason: Reason, event: ReviewEvent) -> str:
    d = reason.details
    suggested = event.suggested_label or "another label"
    if reason.detector == "cluster" and "majority_label" in d:
        size = int(d.get("cluster_size", 0))
        return (f"{round(float(d['majority_share']) * size)} of the {size} samples in its cluster are labelled "
                f"{d['majority_label']}.")
    if reason.detector == "confident" and "p_label" in d:
        return (f"Judged out of sample, {event.label} has a probability of {float(d['p_label']):.2f} and {suggested} "
                f"of {float(d.get('p_suggested', 0)):.2f}; {event.label} needs {float(d.get('threshold', 0)):.2f} "
                "to be trusted.")
    if reason.detector == "model" and "predicted" in d:
        return (f"The online model, which had not seen it, predicts {d['predicted']} "
                f"({float(d.get('p_predicted', 0)):.2f}) and gives {event.label} {float(d['p_label']):.2f}.")
    if reason.detector == "neighbors" and "neighbor_vote" in d:
        return (f"{float(d['neighbor_vote']):.0%} of its nearest neighbours' vote goes to {suggested}, "
                f"{float(d.get('p_label', 0)):.0%} to {event.label}.")
    if reason.detector == "consensus" and "annotations" in d:
        answers = d["annotations"]
        agreeing = sum(label == d["consensus"] for label in answers.values())
        return f"{agreeing} of its {len(answers)} annotators labelled it {d['consensus']}."
    shown = ", ".join(f"{k} {v}" for k, v in d.items())
    return f"{reason.detector}: score {reason.score:.2f}" + (f" ({shown})." if shown else ".")
