"""Detection quality: ``labelwatch audit`` against a cleanlab batch baseline, on the same features.

For every dataset and noise setting, labels are corrupted with a fixed seed, the samples are
written as a JSONL stream of AnnotatedSample lines (features as ``embedding``, shuffled order) and
the real CLI is run over it, exactly as a user would:

    python -m consumer audit INPUT.jsonl --out EVENTS.jsonl --verdicts-out VERDICTS.jsonl [AUDIT ARGS]

Flagged = distinct sample ids in EVENTS; score = a sample's latest ``score`` in VERDICTS (the final
re-audit gives its last word on every sample of the window it re-scores). Side by side, cleanlab's batch method sees the same feature matrix:
5-fold out-of-fold ``predict_proba`` of StandardScaler + LogisticRegression, then
``cleanlab.filter.find_label_issues`` (defaults); its score is ``1 - get_label_quality_scores``.
Baseline results are cached per (dataset, setting, seed) in ``bench/out/``.

Text (reviews, tweets, courses) is embedded once with all-MiniLM-L6-v2, by the service's default
embedding backend unless ``--embedding-backend`` names another, and cached as ``.npy`` under
``bench/out/``; from then on it is a precomputed 384-d vector like every other dataset.

    .venv/bin/python bench/quality.py                                  # everything, writes docs/benchmarks.md
    .venv/bin/python bench/quality.py --datasets digits --no-baseline --no-write --audit-args "--n-clusters 64"
    .venv/bin/python bench/quality.py --sweep-k 4,8,16,32,64,128 --datasets digits,image_segments
    .venv/bin/python bench/quality.py --answers                        # with a reviewer answering every flag
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.quality_report import flat_groups, fmt, quality_table, run_environment, sweep_plot, sweep_table, targets  # noqa: E402
from bench.report import replace_section  # noqa: E402
from consumer.demo.datasets import DATASETS, LabeledData, corrupted_ids, inject_noise, load, to_messages  # noqa: E402
from consumer.evaluate import auprc, detection_metrics  # noqa: E402,F401  (the metrics `labelwatch evaluate` prints)
from consumer.settings import DEFAULT_EMBEDDING_BACKEND  # noqa: E402

#: setting name -> (noise kind, noise rate)
SETTINGS = {"uniform10": ("uniform", 0.10), "uniform20": ("uniform", 0.20), "pairflip20": ("pairflip", 0.20)}
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
CACHE_DIR = REPO / "bench" / "out"


# --------------------------------------------------------------------------------------------- metrics

# -------------------------------------------------------------------------------------------- features

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _backend_tag(backend: str) -> str:
    """The cache files' suffix of a backend: none for torch, whose caches came first."""
    return "" if backend == "torch" else f"-{backend}"


def features(name: str, cache_dir: Path = CACHE_DIR, model: str = EMBEDDING_MODEL,
             backend: str = DEFAULT_EMBEDDING_BACKEND) -> LabeledData:
    """A dataset with ``vectors`` set: text datasets are embedded once and cached as ``.npy``."""
    data = load(name)
    if data.vectors is not None:
        return data
    cache = cache_dir / f"{name}-embeddings-{_slug(model)}{_backend_tag(backend)}.npy"
    vectors = None
    if cache.exists():
        vectors = np.load(cache)
        if vectors.shape[0] != len(data):
            print(f"[quality] {cache} has {vectors.shape[0]} rows for {len(data)} texts; re-embedding",
                  file=sys.stderr)
            vectors = None
    if vectors is None:
        from consumer.embedding import make_embedder

        print(f"[quality] embedding {len(data)} {name} texts with {model}, backend {backend} (cached in {cache})",
              file=sys.stderr)
        started = time.perf_counter()
        vectors = make_embedder(model, backend=backend).encode(data.texts)
        print(f"[quality] embedded in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return dataclasses.replace(data, vectors=np.asarray(vectors, dtype=np.float32))


def stream_features(data: LabeledData) -> np.ndarray:
    """The matrix exactly as the JSONL stream carries it (``to_messages`` rounds to 6 decimals)."""
    return np.round(data.vectors.astype(np.float64), 6)


@dataclasses.dataclass
class Case:
    dataset: str
    setting: str
    kind: str
    rate: float
    seed: int
    data: LabeledData
    noisy: np.ndarray
    corrupted: np.ndarray

    @property
    def truth(self) -> set[str]:
        return corrupted_ids(self.data, self.corrupted)

    @property
    def ids(self) -> list[str]:
        return [f"{self.data.name}-{i}" for i in range(len(self.data))]


def make_case(data: LabeledData, setting: str, seed: int) -> Case:
    kind, rate = SETTINGS[setting]
    noisy, corrupted = inject_noise(data.labels, rate, n_classes=len(data.class_names), kind=kind, seed=seed)
    return Case(data.name, setting, kind, rate, seed, data, noisy, corrupted)


# ------------------------------------------------------------------------------------------ labelwatch

def write_stream(case: Case, path: Path) -> None:
    with path.open("wb") as out:
        for message in to_messages(case.data, case.noisy, order_seed=case.seed):
            out.write(orjson.dumps(message) + b"\n")


def write_answers(case: Case, path: Path) -> None:
    """A reviewer who is always right, as Correction lines: every corrupted sample confirmed with its
    true label, every other one a false alarm. ``audit --answers`` applies each once its flag is sent."""
    with path.open("wb") as out:
        for i, sample_id in enumerate(case.ids):
            answer = {"dataset": case.data.name, "sample_id": sample_id, "outcome": "false_alarm"}
            if case.corrupted[i]:
                answer.update(outcome="confirmed", corrected_label=case.data.class_names[case.data.labels[i]])
            out.write(orjson.dumps(answer) + b"\n")


def run_audit(case: Case, workdir: Path, audit_args: list[str], answers: bool = False) -> dict:
    """Run the real CLI over the case's stream (with ``answers``, a reviewer answering every flag:
    :func:`write_answers`); metrics of its events and verdicts."""
    stem = f"{case.dataset}-{case.setting}-{case.seed}"
    source, events, verdicts, counts = (workdir / f"{stem}.jsonl", workdir / f"{stem}-events.jsonl",
                                        workdir / f"{stem}-verdicts.jsonl", workdir / f"{stem}-summary.json")
    write_stream(case, source)
    if answers:
        write_answers(case, workdir / f"{stem}-answers.jsonl")
        audit_args = [*audit_args, "--answers", str(workdir / f"{stem}-answers.jsonl")]
    command = [sys.executable, "-m", "consumer", "audit", str(source), "--out", str(events),
               "--verdicts-out", str(verdicts), "--summary-out", str(counts), *audit_args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"labelwatch audit failed (exit {done.returncode}) on {stem}: "
                           f"{shlex.join(command[1:])}\n{done.stderr[-4000:]}")
    event_ids = [orjson.loads(line)["sample_id"] for line in events.read_bytes().splitlines() if line.strip()]
    flagged = set(event_ids)
    summary = json.loads(counts.read_text())  # the audit's own counts (events are written live ones first)
    live_flagged = set(event_ids[:summary["flagged_live"]])
    scores: dict[str, float] = {}
    n_verdicts = n_late = 0
    flagged_verdicts: set[str] = set()
    for line in verdicts.read_bytes().splitlines():
        if not line.strip():
            continue
        record = orjson.loads(line)
        n_verdicts += 1
        n_late += bool(record.get("late"))
        sid = record["sample_id"]
        scores[sid] = float(record["score"])  # the latest verdict: the final re-audit's, where there is one
        if record.get("flagged"):
            flagged_verdicts.add(sid)
    ids = case.ids
    result = detection_metrics(flagged, case.truth, len(ids))
    result.update({
        "live": detection_metrics(live_flagged, case.truth, len(ids)),
        "auprc": auprc(scores, case.truth, ids),
        "seconds": seconds,
        "n_events": len(event_ids),
        "n_verdicts": n_verdicts,
        "n_late_verdicts": n_late,
        "n_without_verdict": sum(i not in scores for i in ids),
        "flagged_events_without_flagged_verdict": len(flagged - flagged_verdicts),
        "flagged_verdicts_without_event": len(flagged_verdicts - flagged),
        "rejected": summary["rejected"],
        "answers_applied": summary.get("answers_applied", 0),
        # the share of labels the audit estimated wrong at the end (its flag budgets followed it)
        "estimated_error_rate": next(iter(summary.get("estimated_error_rate", {}).values()), None),
        "cli_summary": (done.stderr.strip().splitlines() or [""])[-1],
    })
    return result


# -------------------------------------------------------------------------------------------- cleanlab

def _baseline_cache(case: Case, cache_dir: Path, backend: str) -> Path:
    model = f"-{_slug(EMBEDDING_MODEL)}{_backend_tag(backend)}" if case.data.texts is not None else ""
    return cache_dir / f"cleanlab-{case.dataset}{model}-{case.setting}-seed{case.seed}.json"


def cleanlab_baseline(case: Case, cache_dir: Path = CACHE_DIR, refresh: bool = False,
                      backend: str = DEFAULT_EMBEDDING_BACKEND) -> dict:
    """cleanlab's batch method on the stream's features; cached as JSON per (dataset, setting, seed, backend)."""
    cache = _baseline_cache(case, cache_dir, backend)
    if cache.exists() and not refresh:
        result = json.loads(cache.read_text())
        result["cached"] = True
        return result
    import cleanlab
    import sklearn

    from consumer.evaluate import cleanlab_reference

    started = time.perf_counter()
    result = cleanlab_reference(stream_features(case.data), case.noisy, case.ids, case.truth, case.seed)
    result.update({"seconds": time.perf_counter() - started, "cleanlab": cleanlab.__version__,
                   "sklearn": sklearn.__version__})
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2) + "\n")
    result["cached"] = False
    return result


# ------------------------------------------------------------------------------------------------ runs

def evaluate(args: argparse.Namespace, audit_args: list[str], workdir: Path) -> list[dict]:
    rows = []
    for name in args.datasets:
        data = features(name, args.cache_dir, backend=args.embedding_backend)
        for setting in args.settings:
            case = make_case(data, setting, args.seed)
            print(f"[quality] {name} {setting}: labelwatch audit ...", file=sys.stderr, flush=True)
            row = {"dataset": name, "setting": setting, "kind": case.kind, "rate": case.rate, "seed": args.seed,
                   "n": len(data), "n_classes": len(data.class_names), "dim": int(data.vectors.shape[1]),
                   "labelwatch": run_audit(case, workdir, audit_args, args.answers)}
            lw = row["labelwatch"]
            print(f"[quality]   labelwatch P {lw['precision']:.3f} R {lw['recall']:.3f} F1 {lw['f1']:.3f} "
                  f"AUPRC {lw['auprc']:.3f} review {lw['review_fraction']:.3f} in {lw['seconds']:.1f}s",
                  file=sys.stderr, flush=True)
            if not args.no_baseline:
                cl = row["cleanlab"] = cleanlab_baseline(case, args.cache_dir, args.refresh_baseline, args.embedding_backend)
                row["f1_ratio"] = lw["f1"] / cl["f1"] if cl["f1"] > 0 else None
                print(f"[quality]   cleanlab   P {cl['precision']:.3f} R {cl['recall']:.3f} F1 {cl['f1']:.3f} "
                      f"AUPRC {cl['auprc']:.3f} review {cl['review_fraction']:.3f} in {cl['seconds']:.1f}s"
                      f"{' (cached)' if cl['cached'] else ''}; F1 ratio {fmt(row['f1_ratio'])}",
                      file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def sweep(args: argparse.Namespace, audit_args: list[str], workdir: Path, ks: list[int]) -> list[dict]:
    rows = []
    for name in args.datasets:
        data = features(name, args.cache_dir, backend=args.embedding_backend)
        for setting in args.settings:
            case = make_case(data, setting, args.seed)
            for k in ks:
                print(f"[quality] {name} {setting} K={k} ...", file=sys.stderr, flush=True)
                lw = run_audit(case, workdir, [*audit_args, "--n-clusters", str(k)])
                print(f"[quality]   review {lw['review_fraction']:.3f} R {lw['recall']:.3f} "
                      f"P {lw['precision']:.3f} F1 {lw['f1']:.3f} in {lw['seconds']:.1f}s", file=sys.stderr,
                      flush=True)
                rows.append({"dataset": name, "setting": setting, "kind": case.kind, "rate": case.rate,
                             "seed": args.seed, "k": k, "labelwatch": lw})
            if not args.no_baseline:
                rows.append({"dataset": name, "setting": setting, "kind": case.kind, "rate": case.rate,
                             "seed": args.seed, "k": None,
                             "cleanlab": cleanlab_baseline(case, args.cache_dir, args.refresh_baseline, args.embedding_backend)})
    return rows


def _csv(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad) or '(none)'}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--datasets", type=lambda v: _csv(v, DATASETS, "dataset"), default=list(DATASETS),
                        help=f"Comma-separated subset of {','.join(DATASETS)} (default: all).")
    parser.add_argument("--settings", type=lambda v: _csv(v, SETTINGS, "setting"), default=list(SETTINGS),
                        help=f"Comma-separated subset of {','.join(SETTINGS)} (default: all).")
    parser.add_argument("--audit-args", default="", help='Extra flags for `labelwatch audit`, e.g. "--n-clusters 64".')
    parser.add_argument("--seed", type=int, default=0, help="Seed of the noise, the stream order and the CV folds.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown file to update.")
    parser.add_argument("--no-write", action="store_true", help="Print only; write neither markdown nor plot.")
    parser.add_argument("--no-baseline", action="store_true", help="Skip cleanlab (fast tuning loops).")
    parser.add_argument("--refresh-baseline", action="store_true", help="Recompute cached cleanlab results.")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="Embeddings and baseline cache.")
    parser.add_argument("--embedding-backend", choices=("torch", "onnx", "onnx-int8"),
                        default=DEFAULT_EMBEDDING_BACKEND, help=f"What embeds the text datasets (default {DEFAULT_EMBEDDING_BACKEND}, the service's).")
    parser.add_argument("--answers", action="store_true",
                        help="A reviewer answers every flag, always rightly (audit --answers): the table of the "
                             "service with its review loop running, in its own section of --out.")
    parser.add_argument("--json-out", type=Path, help="Write every raw number here as JSON.")
    parser.add_argument("--sweep-k", type=lambda v: [int(k) for k in v.split(",") if k.strip()],
                        help="Comma-separated K values: run the K sweep instead of the quality table.")
    parser.add_argument("--plot", type=Path, help="K-sweep PNG (default: k_sweep.png next to --out).")
    args = parser.parse_args(argv)
    audit_args = shlex.split(args.audit_args)
    env = run_environment(audit_args, args.embedding_backend)
    if args.answers:
        env["audit_command"] += " --answers ANSWERS.jsonl"
    if env["labelwatch_env"]:
        print(f"[quality] note: LABELWATCH_* variables are set and reach the audit: {env['labelwatch_env']}",
              file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labelwatch-quality-") as tmp:
        if args.sweep_k:
            rows = sweep(args, audit_args, Path(tmp), args.sweep_k)
        else:
            rows = evaluate(args, audit_args, Path(tmp))
    env["total_seconds"] = time.perf_counter() - started
    if args.sweep_k:
        plot = args.plot or args.out.parent / "k_sweep.png"
        image = os.path.relpath(plot, args.out.parent) if not args.no_write else None
        text = sweep_table(rows, env, args.seed, image)
        summary: dict = {"k_without_effect": flat_groups(rows)}
        section = "k-sweep"
    else:
        text = quality_table(rows, env, args.seed, answered=args.answers)
        summary = {k: v for k, v in targets(rows).items() if k != "lines"}
        section = "quality-answered" if args.answers else "quality"
    text += f"\n\nTotal wall time of this run: {env['total_seconds']:.0f}s."
    print(text)
    if not args.no_write:
        if args.sweep_k:
            sweep_plot(rows, plot)
            print(f"[quality] wrote {plot}", file=sys.stderr)
        replace_section(args.out, section, text)
        print(f"[quality] wrote section {section!r} of {args.out}", file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"environment": env, "audit_args": audit_args, "mode": section,
                                             "rows": rows, "targets": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
