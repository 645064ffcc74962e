"""The output message: a sample that a reviewer should look at."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SourcePosition(BaseModel):
    """Where a record was read from: its Kafka topic, partition and offset."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class Reason(BaseModel):
    """One detector's evidence that a label is wrong. ``score`` is in [0, 1], higher is more suspect."""

    model_config = ConfigDict(frozen=True)

    detector: str
    score: float = Field(ge=0.0, le=1.0)
    details: dict[str, Any] = Field(default_factory=dict)


class Neighbor(BaseModel):
    """An earlier sample near a flagged one, with the label it was given."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    label: str
    similarity: float = Field(description="Cosine similarity to the flagged sample (after standardisation).")


class ReviewContext(BaseModel):
    """What a reviewer needs besides the sample: its cluster's label mix and its nearest earlier samples."""

    model_config = ConfigDict(frozen=True)

    cluster_labels: dict[str, int] = Field(
        default_factory=dict, description="Label counts of the sample's cluster over the detector's window.")
    neighbors: list[Neighbor] = Field(default_factory=list, description="Nearest earlier samples, nearest first.")


def make_event_id(dataset: str, sample_id: str, label: str, verdict: str) -> str:
    """A deterministic id for one verdict on one sample, so that a replay yields the same id.

    >>> make_event_id("default", "a1", "cat", "flagged") == make_event_id("default", "a1", "cat", "flagged")
    True
    >>> make_event_id("default", "a1", "cat", "flagged") == make_event_id("default", "a1", "dog", "flagged")
    False
    """
    key = json.dumps([dataset, sample_id, label, verdict], ensure_ascii=False).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


class ReviewEvent(BaseModel):
    """A suspect label, put on the review-queue topic for a human to check.

    ``score`` is the combined probability-like suspicion in [0, 1]: higher means more likely mislabeled.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Deterministic from dataset, sample, label and verdict.")
    dataset: str
    sample_id: str
    label: str
    suggested_label: str | None = None
    score: float = Field(ge=0.0, le=1.0)
    reasons: list[Reason]
    cluster_id: int | None = None
    annotator_id: str | None = None
    late: bool = Field(default=False, description="Flagged by a retrospective re-audit, after the first verdict.")
    source: SourcePosition | None = Field(default=None, description="Kafka position, when read from Kafka.")
    priority: int = Field(default=2, ge=1, le=3, description="1: review first (strong or corroborated evidence), 3: last.")
    text: str | None = Field(default=None, description="The annotated text, when the sample had one, for reviewers.")
    context: ReviewContext | None = Field(default=None, description="The cluster's label mix and the nearest earlier "
                                                                    "samples, when the detectors have them.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="The sample's metadata, shown to reviewers.")


def priority_of(score: float, n_reasons: int) -> int:
    """Review priority: 1 for a score of 0.9 or more, or evidence from several detectors; 2 from 0.7; else 3.

    >>> priority_of(0.95, 1), priority_of(0.6, 2), priority_of(0.75, 1), priority_of(0.5, 1)
    (1, 1, 2, 3)
    """
    if score >= 0.9 or n_reasons >= 2:
        return 1
    return 2 if score >= 0.7 else 3
