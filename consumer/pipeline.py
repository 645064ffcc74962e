"""The pipeline that ``run`` and ``audit`` share: decode, embed, detect, build events."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydantic import ValidationError

from consumer.metrics import Metrics
from consumer.state import StateStore
from detectors import Assessment, Batch, LabelMonitor, MonitorConfig
from schemas import AnnotatedSample, DeadLetter, Reason, ReviewEvent, SampleVerdict, SourcePosition, make_event_id


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One raw input record and where it came from (a Kafka position or a file line)."""

    value: bytes | None
    source: SourcePosition | None = None
    line: int | None = None
    timestamp_ms: int | None = None


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


def decode(record: InputRecord, max_bytes: int) -> AnnotatedSample | DeadLetter:
    """Validate one raw record, or explain why it is rejected."""
    def reject(reason: str, kind: str) -> DeadLetter:
        return DeadLetter.from_bytes(record.value, reason=reason, error_type=kind, source=record.source)

    if record.value is None:
        return reject("empty record (null value)", "empty")
    if len(record.value) > max_bytes:
        return reject(f"record of {len(record.value)} bytes exceeds the limit of {max_bytes}", "too_large")
    try:
        return AnnotatedSample.model_validate_json(record.value)
    except ValidationError as error:
        kind = "not_json" if any(e["type"] == "json_invalid" for e in error.errors()) else "schema"
        return reject(_describe(error), kind)


class Pipeline:
    """Decodes records, embeds text, runs each dataset's detectors and builds review events.

    Datasets never share state: each has its own :class:`~detectors.LabelMonitor`, created from
    ``monitor_config`` the first time the dataset appears. A dataset's vector dimension is fixed by
    the most common dimension of its first micro-batch; a sample of another dimension is rejected.
    """

    def __init__(self, monitor_config: MonitorConfig, embedder: Embedder | None,
                 *, metrics: Metrics | None = None, max_message_bytes: int = 1_048_576,
                 state: StateStore | None = None):
        self.monitor_config = monitor_config
        self.embedder = embedder
        self.metrics = metrics or Metrics()
        self.max_message_bytes = max_message_bytes
        self.state = state
        self.monitors: dict[str, LabelMonitor] = {}
        self._changed: set[str] = set()

    def monitor(self, dataset: str) -> LabelMonitor:
        """The dataset's monitor: from memory, else from its checkpoint, else fresh."""
        if dataset not in self.monitors:
            restored = self.state.load(dataset) if self.state is not None else None
            self.monitors[dataset] = restored if restored is not None else LabelMonitor.from_config(self.monitor_config)
        return self.monitors[dataset]

    def checkpoint(self) -> int:
        """Save the state of every dataset that learned something since the last checkpoint."""
        if self.state is None:
            self._changed.clear()
            return 0
        for dataset in sorted(self._changed):
            self.state.save(dataset, self.monitors[dataset])
        saved, self._changed = len(self._changed), set()
        return saved

    def process(self, records: Sequence[InputRecord]) -> BatchResult:
        """Judge a micro-batch. Every record ends as processed or as a dead letter."""
        result = BatchResult()
        valid: dict[str, list[tuple[InputRecord, AnnotatedSample]]] = {}
        for record in records:
            decoded = decode(record, self.max_message_bytes)
            if isinstance(decoded, DeadLetter):
                result.dead_letters.append((record, decoded))
            else:
                valid.setdefault(decoded.dataset, []).append((record, decoded))
        for dataset, items in valid.items():
            self._process_dataset(dataset, items, result)
        for _, letter in result.dead_letters:
            self.metrics.samples_invalid.labels(reason=letter.error_type).inc()
        return result

    def _vectors(self, samples: list[AnnotatedSample]) -> list[np.ndarray | None]:
        vectors: list[np.ndarray | None] = [
            np.asarray(s.embedding, dtype=np.float32) if s.embedding is not None else None for s in samples
        ]
        to_embed = [i for i, v in enumerate(vectors) if v is None]
        if to_embed:
            if self.embedder is None:
                raise RuntimeError("text samples need an embedding model")
            started = time.perf_counter()
            encoded = self.embedder.encode([samples[i].text for i in to_embed])
            self.metrics.embedding_seconds.observe(time.perf_counter() - started)
            for i, vector in zip(to_embed, encoded):
                vectors[i] = vector
        return vectors

    def _process_dataset(self, dataset: str, items, result: BatchResult) -> None:
        monitor = self.monitor(dataset)
        vectors = self._vectors([sample for _, sample in items])
        dimension = monitor.dimension or Counter(len(v) for v in vectors).most_common(1)[0][0]
        kept, kept_vectors = [], []
        for (record, sample), vector in zip(items, vectors):
            if len(vector) != dimension:
                reason = f"embedding has dimension {len(vector)}, dataset {dataset!r} uses {dimension}"
                result.dead_letters.append((record, DeadLetter.from_bytes(
                    record.value, reason=reason, error_type="dimension_mismatch", source=record.source)))
            else:
                kept.append((record, sample))
                kept_vectors.append(vector)
        if not kept:
            return
        samples = [sample for _, sample in kept]
        batch = Batch(
            np.vstack(kept_vectors),
            [s.label for s in samples],
            [s.prediction.probabilities or {s.prediction.label: 1.0} if s.prediction else None for s in samples],
            [s.sample_id for s in samples],
        )
        payloads = [(sample, record.source) for record, sample in kept]
        assessments, late = monitor.process(batch, payloads)
        self._changed.add(dataset)
        result.n_processed += len(kept)
        label = self.metrics.dataset_label(dataset)
        self.metrics.samples_processed.labels(dataset=label).inc(len(kept))
        cluster = monitor.detector("cluster")
        if cluster is not None:
            self.metrics.clusters.labels(dataset=label).set(cluster.n_active_clusters)
        for payload, assessment in zip(payloads, assessments):
            self._record(payload, assessment, result, late=False)
        for verdict in late:
            self._record(verdict.payload, verdict.assessment, result, late=True)

    def _record(self, payload, assessment: Assessment, result: BatchResult, *, late: bool) -> None:
        sample, source = payload
        result.verdicts.append(sample_verdict(sample, assessment, source, late=late))
        if assessment.verdict.flagged:
            event = review_event(sample, assessment, source, late=late)
            result.events.append(event)
            self.metrics.review_events.labels(dataset=self.metrics.dataset_label(sample.dataset)).inc()
            for reason in event.reasons:
                self.metrics.detector_flags.labels(detector=reason.detector).inc()

    def flush(self) -> BatchResult:
        """Final re-audit of every dataset's window: late verdicts for samples now found suspect."""
        result = BatchResult()
        for monitor in self.monitors.values():
            for verdict in monitor.flush():
                self._record(verdict.payload, verdict.assessment, result, late=True)
        return result


def review_event(sample: AnnotatedSample, assessment: Assessment, source: SourcePosition | None,
                 *, late: bool = False) -> ReviewEvent:
    """The review event for a flagged sample: its evidence, suggestion and a replay-stable id."""
    reasons = [
        Reason(detector=name, score=min(max(signal.score, 0.0), 1.0), details=signal.details)
        for name, signal in assessment.signals.items()
        if signal.flagged
    ]
    return ReviewEvent(
        event_id=make_event_id(sample.dataset, sample.sample_id, sample.label, "flagged"),
        dataset=sample.dataset,
        sample_id=sample.sample_id,
        label=sample.label,
        suggested_label=assessment.verdict.suggested_label,
        score=min(max(assessment.verdict.score, 0.0), 1.0),
        reasons=reasons,
        cluster_id=assessment.cluster_id,
        annotator_id=sample.annotator_id,
        late=late,
        source=source,
    )


def sample_verdict(sample: AnnotatedSample, assessment: Assessment, source: SourcePosition | None,
                   *, late: bool = False) -> SampleVerdict:
    """The verdict record of one processed sample, flagged or not."""
    verdict = "flagged" if assessment.verdict.flagged else "clean"
    return SampleVerdict(
        event_id=make_event_id(sample.dataset, sample.sample_id, sample.label, verdict),
        dataset=sample.dataset,
        sample_id=sample.sample_id,
        label=sample.label,
        score=min(max(assessment.verdict.score, 0.0), 1.0),
        flagged=assessment.verdict.flagged,
        late=late,
        source=source,
    )
