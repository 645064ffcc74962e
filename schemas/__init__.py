"""Wire models of labelwatch: what producers send, what reviewers receive, what was rejected."""

from schemas.correction import CORRECTION_VERSION, Correction
from schemas.dead_letter import DeadLetter
from schemas.review import (Neighbor, Reason, ReviewContext, ReviewEvent, SourcePosition, displayable_image, make_event_id,
                            priority_of)
from schemas.sample import AnnotatedSample, UserPrediction
from schemas.verdict import SampleVerdict
from schemas.json_schema import SCHEMA_MODELS, json_schemas

__all__ = [
    "AnnotatedSample",
    "CORRECTION_VERSION",
    "Correction",
    "DeadLetter",
    "Neighbor",
    "Reason",
    "ReviewContext",
    "ReviewEvent",
    "SCHEMA_MODELS",
    "SampleVerdict",
    "SourcePosition",
    "UserPrediction",
    "displayable_image",
    "json_schemas",
    "make_event_id",
    "priority_of",
]
