"""The output message: a sample that a reviewer should look at."""

from __future__ import annotations

import hashlib
import json
import re
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


SNIPPET_CHARS = 200
"""A neighbour's text is shown to this many characters."""
THUMBNAIL_CHARS = 4096
"""A neighbour's image travels in the event only as an address or a data URI of at most this many characters."""
IMAGE_URL_CHARS = 256 * 1024
"""The longest image address or data URI a flagged sample's own ``metadata.image_url`` may be to be shown."""
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+")


def displayable_image(value: Any, max_chars: int = IMAGE_URL_CHARS) -> str | None:
    """``value`` if a reviewer's browser may show it as an image: an http(s) address, or a base64 ``data:``
    URI of a raster image (PNG, JPEG, GIF or WebP; not SVG, which can carry scripts), of at most
    ``max_chars`` characters; otherwise ``None``.

    >>> displayable_image("https://example.org/cat.png"), displayable_image("data:image/png;base64,iVBORw0KGgo=")
    ('https://example.org/cat.png', 'data:image/png;base64,iVBORw0KGgo=')
    >>> [displayable_image(v) for v in ("javascript:alert(1)", "data:image/svg+xml;base64,PHN2Zz4=", 7)]
    [None, None, None]
    """
    if not isinstance(value, str) or len(value) > max_chars:
        return None
    if value.startswith(("https://", "http://")) and not any(c.isspace() or c in "\"'<>" for c in value):
        return value
    return value if _DATA_IMAGE.fullmatch(value) else None


class Neighbor(BaseModel):
    """An earlier sample near a flagged one, with the label it was given, and what a reviewer can see
    of it: the start of its text, or a small image (either kept bounded in the event)."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    label: str
    similarity: float = Field(description="Cosine similarity to the flagged sample (after standardisation).")
    snippet: str | None = Field(default=None, max_length=SNIPPET_CHARS + 1,
                                description=f"The start of its text (at most {SNIPPET_CHARS} characters and an ellipsis).")
    thumbnail: str | None = Field(default=None, max_length=THUMBNAIL_CHARS,
                                  description="Its image (``metadata.image_url``): an http(s) address or a small "
                                              "``data:`` URI.")


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
    suspect_share: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The share of the dataset's recent samples (the re-audit window) "
                                                  "judged at least as suspect: 0.05 is the top 5%.")


def priority_of(score: float, n_reasons: int) -> int:
    """Review priority: 1 for a score of 0.9 or more, or evidence from several detectors; 2 from 0.7; else 3.

    >>> priority_of(0.95, 1), priority_of(0.6, 2), priority_of(0.75, 1), priority_of(0.5, 1)
    (1, 1, 2, 3)
    """
    if score >= 0.9 or n_reasons >= 2:
        return 1
    return 2 if score >= 0.7 else 3
