"""A reviewer's answer to a review event: the label was wrong (and what it should be), or it was fine."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


CORRECTION_VERSION = 2
"""Version 2 added the ``skip`` outcome, ``answered_at`` and ``schema_version``; a message without
``schema_version`` is version 1 and still valid."""


class Correction(BaseModel):
    """One reviewer verdict, posted to the corrections topic.

    >>> Correction.model_validate_json('{"sample_id": "p7", "outcome": "confirmed", "corrected_label": "dog"}').dataset
    'default'
    >>> Correction(sample_id="p7", outcome="skip", reviewer_id="ana", schema_version=2).outcome
    'skip'
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    dataset: str = Field(default="default", min_length=1)
    sample_id: str = Field(min_length=1)
    outcome: Literal["confirmed", "false_alarm", "skip"] = Field(
        description="confirmed: the label is wrong; false_alarm: the label was right after all; skip: this "
                    "reviewer passed (the sample stays open for others; labelwatch run learns nothing from it).")
    corrected_label: str | None = Field(default=None, min_length=1,
                                        description="The right label, when the reviewer confirmed an error.")
    event_id: str | None = Field(default=None, description="The review event answered, if known.")
    reviewer_id: str | None = Field(default=None, description="Who answered (the review desk sets it from the sign-in).")
    answered_at: datetime | None = Field(default=None, description="When the reviewer answered, RFC 3339.")
    schema_version: int = Field(default=1, ge=1, le=CORRECTION_VERSION,
                                description="Version of this message's schema; absent means 1.")

    @model_validator(mode="after")
    def _label_only_when_confirmed(self) -> Correction:
        if self.corrected_label is not None and self.outcome != "confirmed":
            raise ValueError("corrected_label goes with outcome 'confirmed' only")
        return self
