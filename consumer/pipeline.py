"""The pipeline that ``run``, ``audit`` and ``demo`` share: decode, embed, judge, build outputs.

Its collaborators each own one concern: :mod:`consumer.records` (what goes in and out),
:mod:`consumer.state` (each dataset's state and checkpoints), :mod:`consumer.positions` (where
that state stands in the input log), :mod:`consumer.analytics` (drift, annotators, consensus) and
:mod:`consumer.reports` (what the HTTP endpoints read), :mod:`consumer.vectors` (embedding and
checking vectors) and :mod:`consumer.reviews` (reviewers' answers).
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer import reports
from consumer.analytics import Analytics
from consumer.metrics import Metrics
from consumer.positions import LogPositions
from consumer.previews import Previews
from consumer.records import BatchResult, InputRecord, Payload, decode, review_event, sample_verdict
from consumer.runtime import Runtime
from consumer.reviews import apply_corrections
from consumer.state import DatasetState, DatasetStates, StateStore
from consumer.vectors import Embedder, Vectors
from detectors import Assessment, Batch, LabelMonitor, LateVerdict, MonitorConfig
from schemas import AnnotatedSample, DeadLetter

__all__ = ["BatchResult", "DatasetState", "Embedder", "InputRecord", "Pipeline"]

class Pipeline:
    """Decodes records, embeds text, runs each dataset's detectors and builds review events.

    Datasets never share state (:class:`~consumer.state.DatasetStates`). A dataset's vector
    dimension is fixed by the most common dimension of its first micro-batch; a sample of another
    dimension is rejected.

    **Replays.** A record below the dataset's saved position is skipped
    (:class:`~consumer.positions.LogPositions`), so a replay never teaches the detectors a sample
    twice. Records after it are judged again from the checkpoint, and, since verdicts depend only
    on the dataset's sample sequence, judged exactly as before (same verdicts, same event ids),
    provided a dataset's records keep their order, i.e. producers key messages by dataset.
    """

    def __init__(self, monitor_config: MonitorConfig, embedder: Embedder | None,
                 *, metrics: Metrics | None = None, max_message_bytes: int = 1_048_576,
                 state: StateStore | None = None, runtime: Runtime | None = None):
        self.monitor_config = monitor_config
        self.embedder = embedder
        self.metrics = metrics or Metrics()
        self.max_message_bytes = max_message_bytes
        self.state = state
        self.states = DatasetStates(lambda: LabelMonitor.from_config(monitor_config), state)
        self.positions = LogPositions(self.metrics)
        self.analytics = Analytics(self.metrics)
        self.vectors = Vectors(embedder, self.metrics)
        # what each batch leaves to the process: the heap trimmed, and where a Runtime is entered, the survivors frozen
        self.runtime = runtime or Runtime(tune_collector=False)

    def prepare(self) -> None:
        """Load the embedding model now, so that no batch pays for it (and a missing model fails at start)."""
        load = getattr(self.embedder, "load", None)
        if load is not None:
            load()

    def observe_log(self, log_ends: dict[tuple[str, int], int], topic_ids: dict[str, str]) -> None:
        """What the broker says of the input log now (see :class:`~consumer.positions.LogPositions`)."""
        self.positions.observe(log_ends, topic_ids)

    @property
    def datasets(self) -> dict[str, DatasetState]:
        """Each dataset's state in memory."""
        return self.states.in_memory

    @property
    def monitors(self) -> dict[str, LabelMonitor]:
        """Each dataset's monitor in memory."""
        return {name: state.monitor for name, state in self.datasets.items()}

    def dataset_state(self, dataset: str) -> DatasetState:
        """The dataset's state: from memory, else from its checkpoint, else fresh."""
        return self.states.get(dataset)

    @property
    def changed(self) -> bool:
        """Whether some dataset's state changed since the last :meth:`checkpoint`."""
        return self.states.changed

    def checkpoint(self) -> int:
        """Save the state of every dataset that judged something since the last checkpoint."""
        return self.states.checkpoint()

    def release(self) -> None:
        """Forget the in-memory state of every dataset (after a checkpoint), when partitions move away."""
        self.states.release()

    def process(self, records: Sequence[InputRecord], *, defer_reaudits: bool = False) -> BatchResult:
        """Judge a micro-batch. Every record ends as processed or as a dead letter.

        ``defer_reaudits`` queues the re-audits of a completed learning step instead of running them
        here (see :meth:`~detectors.LabelMonitor.process`): :meth:`run_owed_reaudits` runs this
        batch's share of them, :meth:`run_reaudits` more.
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
        self.runtime.after_batch()
        return result

    def _process_dataset(self, dataset: str, items, result: BatchResult, defer_reaudits: bool = False) -> None:
        state = self.states.get(dataset)
        fresh, voided = self.positions.unseen(dataset, state, items)
        kept, matrix = self.vectors.of(dataset, state.monitor.dimension, fresh, result)
        if voided or kept:
            self.states.touch(dataset)
        if not kept:
            return
        samples = [sample for _, sample in kept]
        batch = Batch(matrix, [s.label for s in samples],
                      [s.prediction.probabilities or {s.prediction.label: 1.0} if s.prediction else None for s in samples],
                      [s.sample_id for s in samples])
        payloads = [(sample, record.source) for record, sample in kept]
        evidence = {"consensus": self.analytics.consensus(dataset, state, samples)}
        assessments, late = state.monitor.process(batch, payloads, evidence=evidence, defer_reaudits=defer_reaudits)
        self.positions.advance(dataset, state, kept)
        result.n_processed += len(kept)
        self._count(dataset, state.monitor, len(kept))
        self.analytics.after_batch(dataset, state, samples, assessments)
        state.previews.remember(samples)
        self._record_all(state, payloads, assessments, result, late=False)
        self._record_late(state, late, result)

    def _count(self, dataset: str, monitor: LabelMonitor, n: int) -> None:
        label = self.metrics.dataset_label(dataset)
        self.metrics.samples_processed.labels(dataset=label).inc(n)
        cluster = monitor.detector("cluster")
        if cluster is not None:
            self.metrics.clusters.labels(dataset=label).set(cluster.n_active_clusters)
            if cluster.purity is not None:
                self.metrics.cluster_purity.labels(dataset=label).set(cluster.purity)
        self.metrics.publish_error_rate(label, monitor.estimated_error_rate())

    def _record_late(self, state: DatasetState, late: list[LateVerdict[Payload]], result: BatchResult) -> None:
        self._record_all(state, [v.payload for v in late], [v.assessment for v in late], result, late=True)
        self.analytics.after_late(state, late)

    def _record_all(self, state: DatasetState, payloads: Sequence[Payload], assessments: Sequence[Assessment],
                    result: BatchResult, *, late: bool) -> None:
        """Each sample's verdict, and a review event for each flagged one (ranked against the window once)."""
        shares = iter(state.monitor.suspect_share([a.verdict.score for a in assessments if a.verdict.flagged]))
        for payload, assessment in zip(payloads, assessments):
            self._record(payload, assessment, result, late=late, previews=state.previews,
                         share=next(shares) if assessment.verdict.flagged else None)

    def _record(self, payload: Payload, assessment: Assessment, result: BatchResult, *, late: bool,
                previews: Previews, share: float | None) -> None:
        sample, source = payload
        result.verdicts.append(sample_verdict(sample, assessment, source, late=late))
        if assessment.verdict.flagged:
            event = review_event(sample, assessment, source, late=late, previews=previews, suspect_share=share)
            result.events.append(event)
            self.metrics.review_events.labels(dataset=self.metrics.dataset_label(sample.dataset)).inc()
            for reason in event.reasons:
                self.metrics.detector_flags.labels(detector=reason.detector).inc()
        elif "held_back" in assessment.verdict.details:
            self.metrics.flags_held_back.labels(dataset=self.metrics.dataset_label(sample.dataset)).inc()

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
                self.states.touch(dataset)
                max_samples -= todo
        return result

    def run_owed_reaudits(self) -> BatchResult:
        """Run the share of deferred re-audits that the batches judged since owe, in every dataset; their
        late verdicts (see :meth:`~detectors.LabelMonitor.process`)."""
        result = BatchResult()
        for dataset, state in self.datasets.items():
            if state.monitor.pending_reaudits:
                self._record_late(state, state.monitor.run_owed_reaudits(), result)
                self.states.touch(dataset)
        return result

    def flush(self) -> BatchResult:
        """Final re-audit of every dataset's window: a late verdict on every sample it re-scored (the
        last word on each, scored with all the evidence), and late events for those now found suspect."""
        result = BatchResult()
        for dataset, state in self.datasets.items():
            self.states.touch(dataset)
            self._record_late(state, state.monitor.flush(every=True), result)
        return result

    def correct(self, records: Sequence[InputRecord]) -> BatchResult:
        """Apply reviewers' corrections (the corrections topic); invalid ones become dead letters."""
        return apply_corrections(records, self.states, self.metrics)

    def annotator_report(self, top: int | None = None) -> list[dict]:
        """Every annotator of every dataset in memory, worst estimated error rate first."""
        return reports.annotator_report(self.datasets, top)

    def cluster_report(self, members: int = 5) -> list[dict]:
        """Every cluster of every dataset in memory, mixed clusters first (:func:`consumer.reports.cluster_report`)."""
        return reports.cluster_report(self.datasets, members)

    def publish_annotator_metrics(self, top: int) -> None:
        """The ``top`` worst annotators as gauges (bounded cardinality; 0 publishes none)."""
        reports.publish_annotator_metrics(self.metrics, self.datasets, top)
