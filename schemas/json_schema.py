"""JSON Schema documents for producers and consumers of labelwatch topics (generated, no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.dead_letter import DeadLetter
from schemas.review import ReviewEvent
from schemas.sample import AnnotatedSample

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "annotated_sample": AnnotatedSample,
    "review_event": ReviewEvent,
    "dead_letter": DeadLetter,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every wire model, keyed by file stem.

    >>> sorted(json_schemas())
    ['annotated_sample', 'dead_letter', 'review_event']
    """
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}
