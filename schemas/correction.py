"""A reviewer's answer to a review event: the label was wrong (and what it should be), or it was fine."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Correction(BaseModel):
    """One reviewer verdict, posted to the corrections topic.

    >>> Correction.model_validate_json('{"sample_id": "p7", "outcome": "confirmed", "corrected_label": "dog"}').dataset
    'default'
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    dataset: str = Field(default="default", min_length=1)
    sample_id: str = Field(min_length=1)
    outcome: Literal["confirmed", "false_alarm"] = Field(
        description="confirmed: the label is wrong; false_alarm: the label was right after all.")
    corrected_label: str | None = Field(default=None, min_length=1,
                                        description="The right label, when the reviewer confirmed an error.")
    event_id: str | None = Field(default=None, description="The review event answered, if known.")
    reviewer_id: str | None = None

    @model_validator(mode="after")
    def _label_only_when_confirmed(self) -> Correction:
        if self.corrected_label is not None and self.outcome != "confirmed":
            raise ValueError("corrected_label goes with outcome 'confirmed' only")
        return self
