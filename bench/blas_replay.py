"""Do verdicts depend on which BLAS kernels run? Real datasets, judged under several OpenBLAS kernel families.

A checkpoint may be restored on another node whose CPU makes OpenBLAS take other kernels, and a
replay cuts the stream into other polls. Both move scores in their last float32 bits. This bench
measures whether that ever changes a verdict: each dataset (10% uniform label noise, seed 0) is
judged by a ``LabelMonitor`` with the service's default settings, first verdicts, re-audits and the
final re-audit, once per kernel family in a child process (``OPENBLAS_CORETYPE`` is read at load).
The reference runs the machine's own kernels in polls of 500; every other run cuts the stream at
random places (one-row polls included). Counted against the reference: verdicts whose flag or
suggested label differ, and the largest score difference.

    .venv/bin/python bench/blas_replay.py                       # digits, image_segments, reviews
    .venv/bin/python bench/blas_replay.py --datasets digits --kernels Prescott,Sandybridge
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.quality import CACHE_DIR, features, make_case, stream_features  # noqa: E402

KERNELS = ("Prescott", "Sandybridge", "Haswell")
DATASETS = ("digits", "image_segments", "reviews")


def judge(dataset: str, cuts_seed: int | None, cache_dir: Path) -> dict:
    """Every verdict of one run, as ``[sample_id, stage, flagged, suggested_label, score]`` rows."""
    from threadpoolctl import threadpool_info

    from consumer.settings import Settings
    from detectors import Batch, LabelMonitor

    case = make_case(features(dataset, cache_dir), "uniform10", seed=0)
    order = np.random.default_rng(case.seed).permutation(len(case.data))
    vectors = stream_features(case.data)[order]
    labels = [case.data.class_names[y] for y in case.noisy[order]]
    ids = [case.ids[i] for i in order]
    if cuts_seed is None:
        bounds = list(range(0, len(ids), 500))
    else:
        rng = np.random.default_rng(cuts_seed)
        bounds = sorted({0, *rng.integers(1, len(ids), 60).tolist(), 301, 302, 303})
    bounds.append(len(ids))
    monitor = LabelMonitor.from_config(Settings().monitor_config())
    rows = []

    def record(stage, sample_id, verdict):
        rows.append([sample_id, stage, verdict.flagged, verdict.suggested_label, verdict.score])

    for start, stop in zip(bounds, bounds[1:]):
        assessments, late = monitor.process(Batch.of(vectors[start:stop], labels[start:stop], ids=ids[start:stop]),
                                            payloads=ids[start:stop])
        for sample_id, assessment in zip(ids[start:stop], assessments):
            record("first", sample_id, assessment.verdict)
        for verdict in late:
            record("late", verdict.payload, verdict.assessment.verdict)
    for verdict in monitor.flush():
        record("final", verdict.payload, verdict.assessment.verdict)
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3] or "", r[4]))
    blas = next((lib.get("architecture") for lib in threadpool_info() if lib["user_api"] == "blas"), "?")
    return {"architecture": blas, "rows": rows}


def run_child(dataset: str, kernel: str | None, cuts_seed: int | None, cache_dir: Path) -> dict:
    env = dict(os.environ)
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", dataset, "--out", out.name, "--cache-dir", str(cache_dir)]
        if cuts_seed is not None:
            command += ["--cuts-seed", str(cuts_seed)]
        subprocess.run(command, env=env, check=True)
        return json.loads(Path(out.name).read_text())


def compare(run: dict, reference: dict) -> dict:
    a, b = run["rows"], reference["rows"]
    if [r[:2] for r in a] != [r[:2] for r in b]:
        return {"verdicts": len(a), "differ": "different verdict sets", "max_score_diff": float("nan")}
    differ = sum(x[2:4] != y[2:4] for x, y in zip(a, b))
    return {"verdicts": len(a), "flags": sum(r[2] for r in a), "differ": differ,
            "max_score_diff": max((abs(x[4] - y[4]) for x, y in zip(a, b)), default=0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cuts-seed", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.out).write_text(json.dumps(judge(args.child, args.cuts_seed, args.cache_dir)))
        return
    print("| dataset | kernels | verdicts (flagged) | flag or suggestion differs | largest score difference |")
    print("|---|---|---|---|---|")
    for dataset in args.datasets.split(","):
        features(dataset, args.cache_dir)  # embed text once, here, so every child reads the same vectors
        reference = run_child(dataset, None, None, args.cache_dir)
        for seed, kernel in enumerate(args.kernels.split(","), start=1):
            run = run_child(dataset, kernel, seed, args.cache_dir)
            c = compare(run, reference)
            print(f"| {dataset} | {reference['architecture']}, polls of 500 -> {run['architecture']}, random cuts "
                  f"| {c['verdicts']:,} ({c.get('flags', '?')}) | {c['differ']} | {c['max_score_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
