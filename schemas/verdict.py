"""One record per processed sample, flagged or not: the fate and quality score of every input."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.review import SourcePosition


class SampleVerdict(BaseModel):
    """labelwatch's verdict on one sample. ``score`` in [0, 1], higher is more likely mislabeled.

    ``late`` marks a verdict revised by a retrospective re-audit, after more evidence arrived.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Deterministic from dataset, sample, label and verdict.")
    dataset: str
    sample_id: str
    label: str
    score: float = Field(ge=0.0, le=1.0)
    flagged: bool
    late: bool = False
    source: SourcePosition | None = None
