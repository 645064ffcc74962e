"""Read models for the HTTP endpoints and the annotator gauges, built from public detector state.

They run on the HTTP server's thread while batches are processed: each reads a copy.
"""

from __future__ import annotations

from collections.abc import Mapping

from consumer.metrics import Metrics
from consumer.state import DatasetState


def annotator_report(datasets: Mapping[str, DatasetState], top: int | None = None) -> list[dict]:
    """Every annotator of every dataset in memory, worst estimated error rate first."""
    rows = [{"dataset": dataset, **row} for dataset, state in list(datasets.items())
            for row in state.annotators.report()]
    rows.sort(key=lambda row: (-row["estimated_error_rate"], -row["n"], row["dataset"], row["annotator_id"]))
    return rows[:top] if top is not None else rows


def cluster_report(datasets: Mapping[str, DatasetState], members: int = 5) -> list[dict]:
    """Every cluster of every dataset in memory, mixed clusters first.

    Each entry: ``dataset``, ``cluster_id``, ``size`` (recent samples), ``label_counts``,
    ``majority_label``, ``purity`` (majority share) and up to ``members`` recent sample ids,
    the ones whose label is not the majority first: the clusters to review, and where to look.
    """
    rows = []
    for dataset, state in list(datasets.items()):
        cluster = state.monitor.detector("cluster")
        if cluster is None:
            continue
        recent: dict[int, list[tuple[str, str]]] = {}
        for sample_id, label, cluster_id in state.monitor.recent(2000):
            if cluster_id is not None:
                recent.setdefault(cluster_id, []).append((label, sample_id))
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


def publish_annotator_metrics(metrics: Metrics, datasets: Mapping[str, DatasetState], top: int) -> None:
    """The ``top`` worst annotators as gauges (bounded cardinality; 0 publishes none)."""
    metrics.annotator_error_rate.clear()
    for row in annotator_report(datasets, top) if top else []:
        metrics.annotator_error_rate.labels(dataset=metrics.dataset_label(row["dataset"]),
                                            annotator=row["annotator_id"]).set(row["estimated_error_rate"])
