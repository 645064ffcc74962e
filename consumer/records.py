"""Records in and out of the pipeline: raw input records, their validation, and the output models.

No detector state here: :func:`decode` turns bytes into an ``AnnotatedSample`` or a dead letter,
and :func:`review_event` and :func:`sample_verdict` turn a judged sample into what is produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from consumer.previews import Previews
from detectors import Assessment
from schemas import (AnnotatedSample, DeadLetter, Neighbor, Reason, ReviewContext, ReviewEvent, SampleVerdict,
                     SourcePosition, make_event_id, priority_of)


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One raw input record and where it came from (a Kafka position or a file line).

    ``origin`` is the position of the raw annotation an embedder (``labelwatch embed``) read it
    from, when it came through one: replays are recognised by it (:class:`~consumer.positions.LogPositions`).
    """

    value: bytes | None
    source: SourcePosition | None = None
    line: int | None = None
    timestamp_ms: int | None = None
    origin: SourcePosition | None = None


ORIGIN_HEADER_PREFIX = "labelwatch.origin."
"""Headers with which ``labelwatch embed`` names the raw record each embedded sample came from."""


def input_records(polled) -> list[InputRecord]:
    """A Kafka poll's records (``{TopicPartition: [ConsumerRecord]}``) as :class:`InputRecord` s, partition
    by partition in (topic, partition) order: each with its position, timestamp and origin (headers)."""
    return [InputRecord(value=r.value, source=SourcePosition(topic=r.topic, partition=r.partition, offset=r.offset),
                        timestamp_ms=r.timestamp, origin=origin_of(r.headers))
            for tp in sorted(polled, key=lambda t: (t.topic, t.partition)) for r in polled[tp]]


def origin_headers(source: SourcePosition) -> list[tuple[str, bytes]]:
    """The headers that name ``source`` as a record's origin.

    >>> origin_of(origin_headers(SourcePosition(topic="raw", partition=2, offset=41)))
    SourcePosition(topic='raw', partition=2, offset=41)
    """
    return [(ORIGIN_HEADER_PREFIX + "topic", source.topic.encode()),
            (ORIGIN_HEADER_PREFIX + "partition", str(source.partition).encode()),
            (ORIGIN_HEADER_PREFIX + "offset", str(source.offset).encode())]


def origin_of(headers) -> SourcePosition | None:
    """The origin a record's headers name, or ``None`` when they name none (or not a readable one).

    >>> origin_of([("other", b"x")]) is None, origin_of([("labelwatch.origin.offset", b"x")]) is None
    (True, True)
    """
    found = {key[len(ORIGIN_HEADER_PREFIX):]: value for key, value in headers or ()
             if key.startswith(ORIGIN_HEADER_PREFIX)}
    try:
        return SourcePosition(topic=found["topic"].decode(), partition=int(found["partition"]),
                              offset=int(found["offset"]))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


Payload = tuple[AnnotatedSample, SourcePosition | None]
"""What the pipeline hands the monitor with each sample, and gets back with its late verdicts."""


@dataclass
class BatchResult:
    """What one micro-batch produced."""

    events: list[ReviewEvent] = field(default_factory=list)
    verdicts: list[SampleVerdict] = field(default_factory=list)
    dead_letters: list[tuple[InputRecord, DeadLetter]] = field(default_factory=list)
    n_processed: int = 0


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


DEAD_LETTER_KEEP_BYTES = 131_072
"""Bytes of a rejected record kept inside its dead letter. Beyond, the letter would risk exceeding
the broker's message size (JSON escaping can grow text 6x) and could never be delivered; the
whole record stays in the input topic at the position the letter names."""


def reject(record: InputRecord, reason: str, error_type: str, exception: BaseException | None = None) -> DeadLetter:
    """The dead letter of a record labelwatch cannot use: why, of what kind, and the record itself
    (its first :data:`DEAD_LETTER_KEEP_BYTES` bytes; the whole of it stays at its source position).

    Every dead letter is made here.

    >>> letter = reject(InputRecord(b"oops"), "not JSON", "not_json")
    >>> letter.error_type, letter.original
    ('not_json', 'oops')
    """
    return DeadLetter.from_bytes(record.value, reason=reason, error_type=error_type, source=record.source,
                                 exception=exception, keep_bytes=DEAD_LETTER_KEEP_BYTES)


def decode(record: InputRecord, max_bytes: int) -> AnnotatedSample | DeadLetter:
    """Validate one raw record, or explain why it is rejected."""
    if record.value is None:
        return reject(record, "empty record (null value)", "empty")
    if len(record.value) > max_bytes:
        return reject(record, f"record of {len(record.value)} bytes exceeds the limit of {max_bytes}", "too_large")
    try:
        return AnnotatedSample.model_validate_json(record.value)
    except ValidationError as error:
        kind = "not_json" if any(e["type"] == "json_invalid" for e in error.errors()) else "schema"
        return reject(record, _describe(error), kind, error)


def review_event(sample: AnnotatedSample, assessment: Assessment, source: SourcePosition | None,
                 *, late: bool = False, previews: Previews | None = None,
                 suspect_share: float | None = None) -> ReviewEvent:
    """The review event for a flagged sample: its evidence, suggestion and a replay-stable id, and for
    the reviewer its metadata, how suspect it is among recent samples (``suspect_share``), and its
    context (cluster label mix, nearest earlier samples with what ``previews`` keeps of them) when the
    monitor took one."""
    context = assessment.context
    reasons = [
        Reason(detector=name, score=signal.score, details=signal.details)
        for name, signal in assessment.signals.items()
        if signal.flagged
    ]
    return ReviewEvent(
        event_id=make_event_id(sample.dataset, sample.sample_id, sample.label, "flagged"),
        dataset=sample.dataset,
        sample_id=sample.sample_id,
        label=sample.label,
        suggested_label=assessment.verdict.suggested_label,
        score=assessment.verdict.score,
        reasons=reasons,
        cluster_id=assessment.cluster_id,
        annotator_id=sample.annotator_id,
        late=late,
        source=source,
        priority=priority_of(assessment.verdict.score, len(reasons)),
        text=sample.text,
        context=None if context is None else ReviewContext(
            cluster_labels=dict(context.cluster_labels),
            neighbors=[_neighbor(sample_id, label, similarity, previews)
                       for sample_id, label, similarity in context.neighbors]),
        metadata=sample.metadata,
        suspect_share=suspect_share,
    )


def _neighbor(sample_id: str, label: str, similarity: float, previews: Previews | None) -> Neighbor:
    snippet, thumbnail = (previews.of(sample_id) if previews is not None else None) or (None, None)
    return Neighbor(sample_id=sample_id, label=label, similarity=similarity, snippet=snippet, thumbnail=thumbnail)


def sample_verdict(sample: AnnotatedSample, assessment: Assessment, source: SourcePosition | None,
                   *, late: bool = False) -> SampleVerdict:
    """The verdict record of one processed sample, flagged or not."""
    verdict = "flagged" if assessment.verdict.flagged else "clean"
    return SampleVerdict(
        event_id=make_event_id(sample.dataset, sample.sample_id, sample.label, verdict),
        dataset=sample.dataset,
        sample_id=sample.sample_id,
        label=sample.label,
        score=assessment.verdict.score,
        flagged=assessment.verdict.flagged,
        late=late,
        source=source,
    )
