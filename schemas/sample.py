"""The input message: one freshly annotated sample."""

from __future__ import annotations

import math

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FLOAT32_MAX = 3.4028234663852886e38
"""Embeddings are processed as float32: the pipeline rejects a sample with a larger magnitude
(a dead letter), checking a whole micro-batch at once rather than each message here."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is neither NaN nor infinite, checked by pydantic-core while it parses."""


class UserPrediction(BaseModel):
    """The producer's own model output for the sample, used as extra evidence.

    >>> UserPrediction(label="cat", probabilities={"cat": 0.9, "dog": 0.1}).label
    'cat'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(min_length=1)
    probabilities: dict[str, float] = Field(default_factory=dict)

    @field_validator("probabilities")
    @classmethod
    def _probabilities_in_unit_interval(cls, value: dict[str, float]) -> dict[str, float]:
        for label, p in value.items():
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise ValueError(f"probability of {label!r} must be in [0, 1], got {p}")
        return value


class AnnotatedSample(BaseModel):
    """One annotated sample, as a producer writes it to the input topic.

    A sample carries ``text`` (embedded by labelwatch), a precomputed ``embedding``, or both;
    when both are present the embedding is used and the text is kept for reviewers.

    >>> s = AnnotatedSample.model_validate_json('{"sample_id": "a1", "label": "7", "embedding": [0.1, 0.2]}')
    >>> (s.dataset, s.label, s.embedding)
    ('default', '7', [0.1, 0.2])
    >>> AnnotatedSample(sample_id="a2", label="spam")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for AnnotatedSample
    ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_id: str = Field(min_length=1, description="Stable id of the sample; keys the review events.")
    label: str = Field(min_length=1, description="The label the annotator gave.")
    text: str | None = Field(default=None, description="Raw text, embedded by labelwatch.")
    embedding: list[FiniteFloat] | None = Field(
        default=None, min_length=1, description="Precomputed feature vector (CLIP, image, tabular...)."
    )
    dataset: str = Field(
        default="default",
        min_length=1,
        description="Annotation project; datasets never share detector state.",
    )
    annotator_id: str | None = None
    prediction: UserPrediction | None = Field(
        default=None, description="The producer's own model output, used as evidence."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    annotated_at: datetime | None = Field(default=None, description="RFC 3339 timestamp.")

    @model_validator(mode="after")
    def _has_content(self) -> AnnotatedSample:
        if self.embedding is None and not (self.text and self.text.strip()):
            raise ValueError("a sample needs a non-empty 'text' or an 'embedding'")
        return self
