"""The replay guarantee, as the tests check it: one comparison for every replay and poll-cut test.

A verdict row is a tuple that ends with the score, such as ``(sample_id, late, flagged,
suggested_label, score)`` (:func:`row`). A replay must give the same rows: every field but the score
exactly, the score within :data:`detectors.SCORE_TOLERANCE`.
"""

from __future__ import annotations

import pytest

from detectors import SCORE_TOLERANCE


def row(sample_id, assessment, *, late: bool) -> tuple:
    verdict = assessment.verdict
    return sample_id, late, verdict.flagged, verdict.suggested_label, verdict.score


def in_order(rows: list[tuple]) -> list[tuple]:
    """Rows sorted by sample, then what the verdict says: a late verdict's position depends on the cuts."""
    return sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3] or "", r[4]))


def assert_same_verdicts(got: list[tuple], expected: list[tuple]) -> None:
    """Rows equal but for the last field, the score, which may differ by at most ``SCORE_TOLERANCE``."""
    assert len(got) == len(expected), f"{len(got)} verdicts against {len(expected)}"
    for index, (a, b) in enumerate(zip(got, expected)):
        assert a[:-1] == b[:-1], f"verdict {index} differs: {a} != {b}"
        assert a[-1] == pytest.approx(b[-1], rel=0, abs=SCORE_TOLERANCE), f"score {index}: {a} != {b}"
