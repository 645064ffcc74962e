"""``labelwatch evaluate``: what to expect on your own labelled data, before deploying.

Labels in the file are taken as correct. A share of them is corrupted with fixed seeds, the
samples run through the same pipeline as ``labelwatch audit`` (first verdicts, re-audits, the
final re-audit), and the flags are scored against the corrupted ids. Beside them, cleanlab's batch
method on the same vectors: 5-fold out-of-fold probabilities of a logistic regression, then
``cleanlab.filter.find_label_issues``. ``bench/quality.py`` measures the published table with the
same metrics and the same reference.
"""

from __future__ import annotations

import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from consumer.pipeline import InputRecord, Pipeline
from schemas import AnnotatedSample

KINDS = {"uniform": "uniform", "pair": "pairflip"}


def detection_metrics(flagged: set[str], truth: set[str], n: int) -> dict:
    """Precision, recall and F1 of ``flagged`` against the ``truth`` set, and the share reviewed.

    >>> m = detection_metrics({"a", "b", "c", "d"}, {"a", "b", "e"}, 10)
    >>> (m["tp"], round(m["precision"], 3), round(m["recall"], 3), round(m["f1"], 3), m["review_fraction"])
    (2, 0.5, 0.667, 0.571, 0.4)
    """
    tp = len(flagged & truth)
    precision = tp / len(flagged) if flagged else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"n": n, "n_flagged": len(flagged), "n_corrupted": len(truth), "tp": tp, "precision": precision,
            "recall": recall, "f1": f1, "review_fraction": len(flagged) / n if n else 0.0}


def auprc(scores: dict[str, float], truth: set[str], ids: list[str]) -> float:
    """Average precision of ``scores`` (higher = more likely mislabeled) with ``truth`` as positives.

    Ids without a score count as 0.

    >>> round(auprc({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}, {"a", "c"}, ["a", "b", "c", "d"]), 4)
    0.8333
    """
    from sklearn.metrics import average_precision_score

    y_true = np.array([i in truth for i in ids], dtype=bool)
    y_score = np.array([scores.get(i, 0.0) for i in ids], dtype=np.float64)
    return float(average_precision_score(y_true, y_score))


def cleanlab_reference(vectors: np.ndarray, noisy: np.ndarray, ids: list[str], truth: set[str], seed: int) -> dict:
    """cleanlab's batch method on ``vectors``: 5-fold out-of-fold logistic regression, ``find_label_issues``."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pred_probs = cross_val_predict(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), vectors, noisy,
            cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=seed), method="predict_proba")
    issues = find_label_issues(noisy, pred_probs)
    quality = get_label_quality_scores(noisy, pred_probs)
    result = detection_metrics({ids[i] for i in np.flatnonzero(issues).tolist()}, truth, len(ids))
    result["auprc"] = auprc(dict(zip(ids, (1.0 - quality).tolist())), truth, ids)
    result["convergence_warnings"] = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return result


@dataclass
class Labelled:
    """The samples of a file, embedded once: ids, vectors, labels (ints) and label names."""

    samples: list[AnnotatedSample]
    vectors: np.ndarray
    labels: np.ndarray
    names: list[str]
    rejected: int


def read_labelled(path: Path, pipeline: Pipeline) -> Labelled:
    """Every valid line of ``path``; texts are embedded with the pipeline's embedder."""
    samples, rejected = [], 0
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            samples.append(AnnotatedSample.model_validate_json(raw))
        except ValueError:
            rejected += 1
    if not samples:
        raise SystemExit(f"labelwatch evaluate: no valid AnnotatedSample line in {path}")
    texts = [s.text for s in samples if s.embedding is None]
    embedded = iter(pipeline.embedder.encode(texts)) if texts else iter(())
    vectors = np.stack([np.asarray(s.embedding, dtype=np.float32) if s.embedding is not None else next(embedded)
                        for s in samples])
    names = sorted({s.label for s in samples})
    labels = np.array([names.index(s.label) for s in samples], dtype=np.int64)
    return Labelled(samples, vectors, labels, names, rejected)


def run_labelwatch(make_pipeline, data: Labelled, noisy: np.ndarray, order: np.ndarray, *, batch_size: int = 500,
                   progress=None) -> tuple[set[str], dict[str, float], set[str]]:
    """Stream the samples with ``noisy`` labels, in ``order``; returns (flagged, latest score per id, flagged live)."""
    pipeline = make_pipeline()
    flagged: set[str] = set()
    scores: dict[str, float] = {}

    def absorb(result) -> None:
        flagged.update(e.sample_id for e in result.events)
        for v in result.verdicts:
            scores[v.sample_id] = v.score  # the latest: the final re-audit's last word, where there is one

    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size].tolist()
        records = [InputRecord(orjson.dumps({**data.samples[i].model_dump(mode="json", exclude_none=True,
                                                                          exclude={"text", "embedding"}),
                                             "label": data.names[noisy[i]], "embedding": data.vectors[i].tolist()}),
                               line=i + 1) for i in rows]
        absorb(pipeline.process(records))
        if progress is not None:
            progress.update(len(rows))
    live = set(flagged)
    absorb(pipeline.flush())
    return flagged, scores, live


def evaluate(path: Path, make_pipeline, *, noise: float = 0.1, kind: str = "uniform", seeds: int = 3,
             baseline: bool = True, out=print) -> list[dict]:
    """Inject noise with seeds 0..``seeds``-1, run labelwatch (and cleanlab), print and return one row per seed."""
    from tqdm import tqdm

    from consumer.demo.datasets import inject_noise

    data = read_labelled(path, make_pipeline())
    ids = [s.sample_id for s in data.samples]
    out(f"{len(ids)} samples, {len(data.names)} labels, {data.vectors.shape[1]}-d"
        + (f"; {data.rejected} invalid lines skipped" if data.rejected else ""))
    if len(data.names) < 2:
        raise SystemExit("labelwatch evaluate: the file needs at least two labels")
    rows = []
    with tqdm(total=len(ids) * seeds, unit="sample", desc="evaluate", disable=not sys.stderr.isatty(),
              file=sys.stderr) as progress:
        for seed in range(seeds):
            noisy, corrupted = inject_noise(data.labels, noise, n_classes=len(data.names), kind=KINDS[kind], seed=seed)
            truth = {ids[i] for i in np.flatnonzero(corrupted).tolist()}
            order = np.random.default_rng(seed).permutation(len(ids))
            flagged, scores, live = run_labelwatch(make_pipeline, data, noisy, order, progress=progress)
            row = {"seed": seed, "labelwatch": {**detection_metrics(flagged, truth, len(ids)),
                                                "auprc": auprc(scores, truth, ids),
                                                "live": detection_metrics(live, truth, len(ids))}}
            if baseline:
                row["cleanlab"] = cleanlab_reference(data.vectors, noisy, ids, truth, seed)
            rows.append(row)
    out(_table(rows, noise, kind))
    return rows


def _table(rows: list[dict], noise: float, kind: str) -> str:
    def cells(m: dict) -> str:
        return (f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['review_fraction']:.3f} "
                f"| {m['auprc']:.3f}")

    lines = [f"{noise:.0%} {kind} label noise; review = share of samples flagged; live = flagged while "
             "streaming, before the final re-audit (what `labelwatch run` sends)",
             "| seed | method | precision | recall | F1 | review | AUPRC |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lw = row["labelwatch"]
        lines.append(f"| {row['seed']} | labelwatch | {cells(lw)} |")
        lines.append(f"| {row['seed']} | labelwatch live | {lw['live']['precision']:.3f} | {lw['live']['recall']:.3f} "
                     f"| {lw['live']['f1']:.3f} | {lw['live']['review_fraction']:.3f} | |")
        if "cleanlab" in row:
            lines.append(f"| {row['seed']} | cleanlab (batch) | {cells(row['cleanlab'])} |")
    for method in ("labelwatch", "cleanlab"):
        if all(method in r for r in rows):
            f1 = statistics.mean(r[method]["f1"] for r in rows)
            lines.append(f"mean F1 {method}: {f1:.3f}")
    return "\n".join(lines)
