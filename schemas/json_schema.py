"""JSON Schema documents for producers and consumers of labelwatch topics (generated, no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.correction import Correction
from schemas.dead_letter import DeadLetter
from schemas.review import ReviewEvent
from schemas.sample import AnnotatedSample
from schemas.verdict import SampleVerdict

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "annotated_sample": AnnotatedSample,
    "review_event": ReviewEvent,
    "dead_letter": DeadLetter,
    "sample_verdict": SampleVerdict,
    "correction": Correction,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every wire model, keyed by file stem.

    >>> sorted(json_schemas())
    ['annotated_sample', 'correction', 'dead_letter', 'review_event', 'sample_verdict']
    """
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}
