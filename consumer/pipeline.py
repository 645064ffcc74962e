"""The pipeline that ``run`` and ``audit`` share: decode, embed, detect, build events.

The records it reads and writes (:class:`InputRecord`, :class:`BatchResult`, :func:`decode`, the
output models) live in :mod:`consumer.records` and are importable from here too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from pydantic import ValidationError

from consumer.metrics import Metrics
from consumer.records import (DEAD_LETTER_KEEP_BYTES, BatchResult, InputRecord, _describe, decode,  # noqa: F401
                              reject, review_event, sample_verdict)
from consumer.state import DatasetState, StateStore
from detectors import (Assessment, Batch, LabelMonitor, MonitorConfig,
                       Signal)
from schemas import AnnotatedSample, Correction, DeadLetter
from schemas.sample import FLOAT32_MAX


log = logging.getLogger(__name__)


def disagreement(assessment: Assessment) -> bool | None:
    """Whether the out-of-sample evidence prefers another label than the given one.

    Read from the first detector that reports both probabilities (confident learning, then the
    online model); ``None`` while none has evidence yet.
    """
    for name in ("confident", "model", "neighbors"):
        signal = assessment.signals.get(name)
        if signal is None or signal.details.get("warming_up"):
            continue
        details = signal.details
        if "p_label" in details and "p_suggested" in details:
            return details["p_suggested"] > details["p_label"]
        if "p_label" in details and "p_predicted" in details:
            return details.get("predicted") is not None and details["p_predicted"] > details["p_label"]
    return None


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


class Pipeline:
    """Decodes records, embeds text, runs each dataset's detectors and builds review events.

    Datasets never share state: each has its own :class:`~detectors.LabelMonitor`, created from
    ``monitor_config`` the first time the dataset appears. A dataset's vector dimension is fixed by
    the most common dimension of its first micro-batch; a sample of another dimension is rejected.

    **Replays.** A record whose position is below the dataset's saved position was judged and
    learned before the checkpoint the state came from, and its outputs were delivered before that
    checkpoint was written: it is skipped, so a replay never teaches the detectors a sample twice.
    Records after it are judged again from the checkpoint, and, since verdicts depend only on the
    dataset's sample sequence, judged exactly as before (same verdicts, same event ids), provided
    a dataset's records keep their order, i.e. producers key messages by dataset.
    """

    def __init__(self, monitor_config: MonitorConfig, embedder: Embedder | None,
                 *, metrics: Metrics | None = None, max_message_bytes: int = 1_048_576,
                 state: StateStore | None = None):
        self.monitor_config = monitor_config
        self.embedder = embedder
        self.metrics = metrics or Metrics()
        self.max_message_bytes = max_message_bytes
        self.state = state
        self.datasets: dict[str, DatasetState] = {}
        self._changed: set[str] = set()
        self._warned_partitions: set[str] = set()
        self.log_ends: dict[tuple[str, int], int] = {}
        self.topic_ids: dict[str, str] = {}

    def observe_log(self, log_ends: dict[tuple[str, int], int], topic_ids: dict[str, str]) -> None:
        """What the broker says of the input log now: each partition's end offset, each topic's id.

        A saved position is only valid for the log it was taken from: :meth:`process` voids it when
        the topic's id changed (deleted and created again) or the log now ends before it (lost).
        """
        self.log_ends.update(log_ends)
        self.topic_ids.update(topic_ids)

    def prepare(self) -> None:
        """Load the embedding model now, so that no batch pays for it (and a missing model fails at start)."""
        load = getattr(self.embedder, "load", None)
        if load is not None:
            load()

    @property
    def monitors(self) -> dict[str, LabelMonitor]:
        """Each dataset's monitor in memory."""
        return {name: state.monitor for name, state in self.datasets.items()}

    def dataset_state(self, dataset: str) -> DatasetState:
        """The dataset's state: from memory, else from its checkpoint, else fresh."""
        if dataset not in self.datasets:
            restored = self.state.load(dataset) if self.state is not None else None
            self.datasets[dataset] = restored or DatasetState(LabelMonitor.from_config(self.monitor_config))
        return self.datasets[dataset]

    def monitor(self, dataset: str) -> LabelMonitor:
        """The dataset's monitor: from memory, else from its checkpoint, else fresh."""
        return self.dataset_state(dataset).monitor

    @property
    def changed(self) -> bool:
        """Whether some dataset's state changed since the last :meth:`checkpoint`."""
        return bool(self._changed)

    def checkpoint(self) -> int:
        """Save the state of every dataset that judged something since the last checkpoint."""
        if self.state is None:
            self._changed.clear()
            return 0
        for dataset in sorted(self._changed):
            self.state.save(dataset, self.datasets[dataset])
        saved, self._changed = len(self._changed), set()
        return saved

    def release(self) -> None:
        """Forget the in-memory state of every dataset, after a checkpoint, when partitions move away.

        The next record of a dataset restores it from its checkpoint, which may meanwhile have been
        advanced by another instance that owned the partition. Without a state store nothing is
        released: memory is then the only copy.
        """
        if self.state is not None:
            if self._changed:
                raise RuntimeError("release() before checkpoint() would drop what was judged since")
            self.datasets.clear()

    def process(self, records: Sequence[InputRecord], *, defer_reaudits: bool = False) -> BatchResult:
        """Judge a micro-batch. Every record ends as processed or as a dead letter.

        ``defer_reaudits`` queues the re-audits of a completed learning step instead of running them
        here (see :meth:`~detectors.LabelMonitor.process`); :meth:`run_reaudits` runs them.
        """
        result = BatchResult()
        valid: dict[str, list[tuple[InputRecord, AnnotatedSample]]] = {}
        for record in records:
            decoded = decode(record, self.max_message_bytes)
            if isinstance(decoded, DeadLetter):
                result.dead_letters.append((record, decoded))
            else:
                valid.setdefault(decoded.dataset, []).append((record, decoded))
        for dataset, items in valid.items():
            self._process_dataset(dataset, items, result, defer_reaudits)
        for _, letter in result.dead_letters:
            self.metrics.samples_invalid.labels(reason=letter.error_type).inc()
        return result

    def _vectors(self, samples: list[AnnotatedSample]) -> list[np.ndarray | None]:
        vectors: list = [s.embedding for s in samples]  # lists of floats, stacked into float32 by the caller
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

    def _void_stale_positions(self, dataset: str, state: DatasetState, items) -> None:
        """Forget saved positions that belong to another incarnation of the topic, or past the log's end.

        Skipping by such a position would drop new records silently: after a broker lost its log,
        offsets start again at 0, below every position saved before. The learned state is kept.
        """
        for key in {(r.source.topic, r.source.partition) for r, _ in items if r.source is not None}:
            saved = state.positions.get(key)
            if saved is None:
                continue
            topic_id, known_id = self.topic_ids.get(key[0]), state.topic_ids.get(key[0])
            log_end = self.log_ends.get(key)
            if topic_id and known_id and topic_id != known_id:
                reason = f"the topic was created again (id {known_id} -> {topic_id})"
            elif log_end is not None and log_end < saved:
                reason = f"the log now ends at offset {log_end}, before it (lost or truncated)"
            else:
                continue
            del state.positions[key]
            self.metrics.offset_resets.inc()
            self._changed.add(dataset)
            log.warning("dataset %r: the saved offset %d of %s[%d] is void: %s. Its records are judged as new; "
                        "the learned state is kept", dataset, saved, key[0], key[1], reason)

    def _unseen(self, dataset: str, state: DatasetState, items):
        """The items the dataset's state has not judged yet; replays of judged ones are counted and skipped."""
        self._void_stale_positions(dataset, state, items)
        fresh = []
        for record, sample in items:
            source = record.source
            if source is not None and source.offset < state.positions.get((source.topic, source.partition), -1):
                self.metrics.samples_replayed.inc()
                continue
            fresh.append((record, sample))
        return fresh

    def _advance(self, dataset: str, state: DatasetState, kept) -> None:
        for record, _ in kept:
            if record.source is not None:
                key = (record.source.topic, record.source.partition)
                state.positions[key] = max(state.positions.get(key, 0), record.source.offset + 1)
                if key[0] in self.topic_ids:
                    state.topic_ids[key[0]] = self.topic_ids[key[0]]
        if len(state.positions) > 1 and dataset not in self._warned_partitions:
            self._warned_partitions.add(dataset)
            log.warning("dataset %r arrives on %d partitions: key messages by dataset, or the order of its samples "
                        "(and so a replay's verdicts) depends on how partitions interleave", dataset,
                        len(state.positions))

    def _process_dataset(self, dataset: str, items, result: BatchResult, defer_reaudits: bool = False) -> None:
        state = self.dataset_state(dataset)
        items = self._unseen(dataset, state, items)
        if not items:
            return
        monitor = state.monitor
        vectors = self._vectors([sample for _, sample in items])
        dimension = monitor.dimension or Counter(len(v) for v in vectors).most_common(1)[0][0]
        kept, kept_vectors = [], []
        for (record, sample), vector in zip(items, vectors):
            if len(vector) != dimension:
                reason = f"embedding has dimension {len(vector)}, dataset {dataset!r} uses {dimension}"
                result.dead_letters.append((record, reject(record, reason, "dimension_mismatch")))
            else:
                kept.append((record, sample))
                kept_vectors.append(vector)
        if not kept:
            return
        with np.errstate(over="ignore"):  # beyond float32 range becomes infinite: rejected just below
            matrix = np.array(kept_vectors, dtype=np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            for row in np.flatnonzero(~finite).tolist():
                record = kept[row][0]
                result.dead_letters.append((record, reject(
                    record, f"embedding values must lie within float32 range (|x| <= {FLOAT32_MAX:.4g})", "schema")))
            kept, matrix = [item for item, ok in zip(kept, finite.tolist()) if ok], matrix[finite]
            if not kept:
                return
        samples = [sample for _, sample in kept]
        batch = Batch(
            matrix,
            [s.label for s in samples],
            [s.prediction.probabilities or {s.prediction.label: 1.0} if s.prediction else None for s in samples],
            [s.sample_id for s in samples],
        )
        payloads = [(sample, record.source) for record, sample in kept]
        assessments, late = monitor.process(batch, payloads, defer_reaudits=defer_reaudits)
        self._advance(dataset, state, kept)
        self._changed.add(dataset)
        result.n_processed += len(kept)
        label = self.metrics.dataset_label(dataset)
        self.metrics.samples_processed.labels(dataset=label).inc(len(kept))
        cluster = monitor.detector("cluster")
        if cluster is not None:
            self.metrics.clusters.labels(dataset=label).set(cluster.n_active_clusters)
            if cluster.purity is not None:
                self.metrics.cluster_purity.labels(dataset=label).set(cluster.purity)
        self._watch_drift(dataset, state, samples, assessments)
        for payload, assessment in zip(payloads, assessments):
            self._judge_annotator(dataset, state, payload[0], assessment)
            assessment = self._with_consensus(dataset, state, payload[0], assessment)
            self._record(payload, assessment, result, late=False)
        self._record_late(state, late, result)

    def _record_late(self, state: DatasetState, late, result: BatchResult) -> None:
        for verdict in late:
            self._record(verdict.payload, verdict.assessment, result, late=True)
            if verdict.assessment.verdict.flagged and verdict.payload[0].annotator_id:
                state.annotators.flag_later(verdict.payload[0].annotator_id)

    @property
    def pending_reaudits(self) -> int:
        """Deferred re-audits waiting in every dataset's monitor."""
        return sum(state.monitor.pending_reaudits for state in self.datasets.values())

    def run_reaudits(self, max_samples: int) -> BatchResult:
        """Run up to ``max_samples`` deferred re-audits, across datasets; their late verdicts."""
        result = BatchResult()
        for dataset, state in self.datasets.items():
            if max_samples <= 0:
                break
            todo = min(max_samples, state.monitor.pending_reaudits)
            if todo:
                self._record_late(state, state.monitor.run_reaudits(todo), result)
                self._changed.add(dataset)
                max_samples -= todo
        return result

    def _watch_drift(self, dataset: str, state: DatasetState, samples, assessments) -> None:
        """Label mix and cluster occupancy over time: each shift is a metric and a log event."""
        label = self.metrics.dataset_label(dataset)
        watched = ((state.label_drift, [s.label for s in samples], self.metrics.label_drift, "label"),
                   (state.cluster_drift, [a.cluster_id for a in assessments if a.cluster_id is not None],
                    self.metrics.cluster_drift, "cluster"))
        for drift, categories, counter, kind in watched:
            for shift in drift.update(categories):
                counter.labels(dataset=label).inc()
                log.info("the share of %s %r in dataset %r moved from %.3f to %.3f", kind, shift.category, dataset,
                         shift.before, shift.after,
                         extra={"event": f"{kind}_drift", "dataset": dataset, kind: shift.category,
                                "share_before": shift.before, "share_after": shift.after})

    def _with_consensus(self, dataset: str, state: DatasetState, sample: AnnotatedSample,
                        assessment: Assessment) -> Assessment:
        """Several annotators labelled this sample: a label against their consensus is a review reason."""
        agreed = state.consensus.add(sample.sample_id, sample.annotator_id, sample.label,
                                     reliability=lambda annotator: 1.0 - state.annotators.error_rate(annotator))
        if agreed is None or agreed.unanimous:
            return assessment
        self.metrics.annotator_disagreements.labels(dataset=self.metrics.dataset_label(dataset)).inc()
        if agreed.label == sample.label:
            return assessment
        backing = sum(label == sample.label for label in agreed.annotations.values()) / len(agreed.annotations)
        signal = Signal(round(1.0 - backing, 6), True, agreed.label,
                        {"consensus": agreed.label, "agreement": round(agreed.agreement, 4),
                         "annotations": agreed.annotations})
        verdict = assessment.verdict
        combined = Signal(max(verdict.score, signal.score), True, verdict.suggested_label or agreed.label,
                          {**verdict.details, "consensus": agreed.label})
        return Assessment(combined, {**assessment.signals, "consensus": signal})

    def _judge_annotator(self, dataset: str, state: DatasetState, sample: AnnotatedSample,
                         assessment: Assessment) -> None:
        if not sample.annotator_id:
            return
        disagrees = disagreement(assessment)
        if disagrees is None:
            return
        shift = state.annotators.update(sample.annotator_id, disagrees=disagrees,
                                        flagged=assessment.verdict.flagged)
        if shift is not None and shift.worse:
            self.metrics.annotator_shifts.labels(dataset=self.metrics.dataset_label(dataset)).inc()
            log.warning("annotator %r of dataset %r: disagreement rate rose from %.3f to %.3f after %d samples",
                        shift.annotator_id, dataset, shift.rate_before, shift.rate_after, shift.n,
                        extra={"event": "annotator_shift", "dataset": dataset, "annotator_id": shift.annotator_id,
                               "rate_before": shift.rate_before, "rate_after": shift.rate_after})

    def annotator_report(self, top: int | None = None) -> list[dict]:
        """Every annotator of every dataset in memory, worst estimated error rate first."""
        rows = [{"dataset": dataset, **row} for dataset, state in list(self.datasets.items())
                for row in state.annotators.report()]
        rows.sort(key=lambda row: (-row["estimated_error_rate"], -row["n"], row["dataset"], row["annotator_id"]))
        return rows[:top] if top is not None else rows

    def correct(self, records: Sequence[InputRecord]) -> BatchResult:
        """Apply reviewers' corrections (the corrections topic); invalid ones become dead letters."""
        result = BatchResult()
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("empty correction")
                correction = Correction.model_validate_json(record.value)
            except (ValidationError, ValueError) as error:
                reason = _describe(error) if isinstance(error, ValidationError) else str(error)
                result.dead_letters.append((record, reject(record, f"invalid correction: {reason}", "invalid_correction",
                                                           error)))
                self.metrics.samples_invalid.labels(reason="invalid_correction").inc()
                continue
            state = self.dataset_state(correction.dataset)
            done = state.monitor.correct(correction.sample_id, correction.outcome, correction.corrected_label)
            state.reviewed[correction.outcome] = state.reviewed.get(correction.outcome, 0) + 1
            self._changed.add(correction.dataset)
            label = self.metrics.dataset_label(correction.dataset)
            self.metrics.corrections.labels(dataset=label, outcome=correction.outcome, applied=done).inc()
            confirmed, false_alarms = state.reviewed.get("confirmed", 0), state.reviewed.get("false_alarm", 0)
            self.metrics.reviewer_precision.labels(dataset=label).set(confirmed / (confirmed + false_alarms))
        return result

    def cluster_report(self, members: int = 5) -> list[dict]:
        """Every cluster of every dataset in memory, mixed clusters first.

        Each entry: ``dataset``, ``cluster_id``, ``size`` (recent samples), ``label_counts``,
        ``majority_label``, ``purity`` (majority share) and up to ``members`` recent sample ids,
        the ones whose label is not the majority first: the clusters to review, and where to look.
        """
        rows = []
        for dataset, state in list(self.datasets.items()):
            cluster = state.monitor.detector("cluster")
            if cluster is None:
                continue
            recent: dict[int, list[tuple[bool, str]]] = {}
            for entry in list(state.monitor._window)[-2000:]:
                cluster_id = entry.assessment.cluster_id
                if cluster_id is not None:
                    recent.setdefault(cluster_id, []).append((entry.label, entry.sample_id))
            for cluster_id, counts in cluster.label_counts().items():
                size = sum(counts.values())
                if not size:
                    continue
                majority = max(counts, key=counts.get)
                seen = recent.get(cluster_id, [])[::-1]
                ordered = [sid for label, sid in seen if label != majority] + [sid for label, sid in seen if label == majority]
                rows.append({"dataset": dataset, "cluster_id": cluster_id, "size": size,
                             "label_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                             "majority_label": majority, "purity": round(counts[majority] / size, 4),
                             "member_ids": ordered[:members]})
        rows.sort(key=lambda row: (row["purity"], -row["size"], row["dataset"], row["cluster_id"]))
        return rows

    def publish_annotator_metrics(self, top: int) -> None:
        """The ``top`` worst annotators as gauges (bounded cardinality; 0 publishes none)."""
        self.metrics.annotator_error_rate.clear()
        for row in self.annotator_report(top) if top else []:
            self.metrics.annotator_error_rate.labels(dataset=self.metrics.dataset_label(row["dataset"]),
                                                     annotator=row["annotator_id"]).set(row["estimated_error_rate"])

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
        """Final re-audit of every dataset's window: a late verdict on every sample it re-scored (the
        last word on each, scored with all the evidence), and late events for those now found suspect."""
        result = BatchResult()
        for dataset, state in self.datasets.items():
            self._changed.add(dataset)
            self._record_late(state, state.monitor.flush(every=True), result)
        return result
