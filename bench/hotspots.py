"""Where labelwatch's own time goes on the vector path, in-process (no Kafka).

The stream of ``bench/throughput.py`` (384-d vectors, 10 Gaussian classes, L2-normalised, rounded to
6 decimals, 10% label noise, seed 0), as JSON records through the real ``Pipeline`` with default
settings, in micro-batches of ``--batch``.

    .venv/bin/python bench/hotspots.py                    # ms per 500 samples in each stage
    .venv/bin/python bench/hotspots.py --py-spy 25        # sampling profile (py-spy): top 25 functions
    .venv/bin/python bench/hotspots.py --cprofile 25      # deterministic profile: top 25 by own time

The stage table wraps the pipeline's and detectors' own methods with timers; nested stages (the
neighbour search inside judging and re-auditing) are shown indented and are part of their parent.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import consumer.pipeline as pipeline_module  # noqa: E402
from bench.throughput import vector_messages  # noqa: E402
from consumer.runtime import Runtime  # noqa: E402
from consumer.analytics import Analytics  # noqa: E402
from consumer.app import build_pipeline  # noqa: E402
from consumer.pipeline import InputRecord, Pipeline  # noqa: E402
from consumer.vectors import Vectors  # noqa: E402
from consumer.settings import Settings  # noqa: E402
from detectors import monitor as monitor_module  # noqa: E402
from detectors.cluster import ClusterDisagreement  # noqa: E402
from detectors.confident import ConfidentLearning  # noqa: E402
from detectors.lda import FoldLDA  # noqa: E402
from detectors.neighbors import NeighborIndex  # noqa: E402
from detectors.reservoir import Reservoir  # noqa: E402
from schemas import SourcePosition  # noqa: E402

#: (label, owner, method): the stages timed, in the order printed; labels starting with spaces are nested
STAGES = [
    ("decode + validate (pydantic)", pipeline_module, "decode"),
    ("to numpy", Vectors, "_vectors"),
    ("judge (every detector's score)", monitor_module.LabelMonitor, "_judge"),
    ("learn (every detector)", monitor_module.LabelMonitor, "_learn_pending"),
    ("re-audit (rescoring due samples)", monitor_module.LabelMonitor, "_reaudit"),
    ("  confident learning's re-audit (proofs, then re-scores)", ConfidentLearning, "reaudit"),
    ("  neighbour search (judge + re-audit + learn)", NeighborIndex, "predict_proba"),
    ("  neighbour vote bounds (in the proofs)", NeighborIndex, "vote_bounds"),
    ("  restandardising the stored rows (each step, in either)", Reservoir, "stacked"),
    ("  cross-fitted LDA predictions", FoldLDA, "predict_proba"),
    ("  cross-fitted LDA solves (each step, in the predictions)", FoldLDA, "_fit"),
    ("  cross-fitted LDA shrinkage choice (each step, in learning)", FoldLDA, "_choose_shrinkage"),
    ("  cross-fitted LDA learning", FoldLDA, "learn"),
    ("  K-means assign", ClusterDisagreement, "score_many"),
    ("  K-means learn", ClusterDisagreement, "learn_many"),
    ("drift watch (ADWIN)", Analytics, "_watch_drift"),
    ("annotator quality", Analytics, "_judge_annotator"),
    ("consensus", Analytics, "_consensus_of"),
    ("verdict and event models", Pipeline, "_record"),
]


def records(n: int) -> list[InputRecord]:
    return [InputRecord(value, SourcePosition(topic="in", partition=0, offset=i))
            for i, value in enumerate(vector_messages(n, 0))]


def run(n: int, batch: int, searches: collections.Counter | None = None,
        batch_seconds: list[float] | None = None) -> float:
    data = records(n)
    with Runtime() as runtime:  # the process's runtime, as the command line enters it
        pipeline = build_pipeline(Settings(), embedder=None, runtime=runtime)
        started = time.perf_counter()
        for start in range(0, n, batch):
            began = time.perf_counter()
            pipeline.process(data[start:start + batch])
            if batch_seconds is not None:
                batch_seconds.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - started
        if searches is not None:  # how the neighbour searches went (full, or only what changed since)
            for monitor in pipeline.monitors.values():
                for detector in monitor.detectors:
                    if detector.neighbor_index is not None:
                        searches.update(getattr(detector.neighbor_index, "search_counts", {}))
        return elapsed


def stage_table(n: int, batch: int) -> None:
    spent: collections.Counter = collections.Counter()

    def timed(label, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - began
        return wrapper

    for label, owner, name in STAGES:
        setattr(owner, name, timed(label, getattr(owner, name)))
    searches: collections.Counter = collections.Counter()
    batch_seconds: list[float] = []
    total = run(n, batch, searches, batch_seconds)
    per = 500 / n * 1000
    p50, p99, longest = (1000 * v for v in np.percentile(batch_seconds, [50, 99, 100]))
    print(f"{n} samples in batches of {batch}: {n / total:,.0f} samples/s, {total * per:.1f} ms per 500 samples; "
          f"a batch took {p50:.0f} ms (median), {p99:.0f} ms (p99), {longest:.0f} ms at most\n")
    print("| stage | ms per 500 samples | share |\n|---|---:|---:|")
    for label, _, _ in STAGES:
        print(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {spent[label] * per:.1f} | {spent[label] / total:.0%} |")
    top = sum(spent[label] for label, _, _ in STAGES if not label.startswith(" "))
    print(f"| everything else (batching, metrics, ...) | {(total - top) * per:.1f} | {(total - top) / total:.0%} |")
    if searches:
        print(f"\nneighbour searches: {searches['full']:,} full, {searches['incremental']:,} only of what changed "
              f"(cached candidates), {searches['graph']:,} by the HNSW graph")


def cprofile(n: int, batch: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    total = run(n, batch)
    profiler.disable()
    print(f"Pipeline.process: {n / total:,.0f} samples/s under cProfile")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def py_spy(n: int, batch: int, top: int) -> None:
    """Re-run this script's plain pipeline under py-spy and summarise its raw samples."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "profile.txt"
        subprocess.run([spy, "record", "--rate", "200", "--format", "raw", "--output", str(raw), "--",
                        sys.executable, __file__, "--samples", str(n), "--batch", str(batch), "--plain"], check=True,
                       stdout=subprocess.DEVNULL)
        own: collections.Counter = collections.Counter()
        inclusive: collections.Counter = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, count = line.rsplit(" ", 1)
            frames = [frame for frame in stack.split(";") if frame]
            if not any("Pipeline.process" in frame or "process (consumer/pipeline.py" in frame for frame in frames):
                continue  # set-up: imports, data generation
            count = int(count)
            total += count
            names = [_short(frame) for frame in frames]
            own[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    print(f"py-spy, {total} samples inside Pipeline.process\n")
    print("| function | own | inclusive |\n|---|---:|---:|")
    for name, count in own.most_common(top):
        print(f"| `{name}` | {count / total:.1%} | {inclusive[name] / total:.1%} |")


def _short(frame: str) -> str:
    """``function (path/to/file.py:line)`` as ``file.py:function``."""
    name, _, where = frame.partition(" (")
    return f"{os.path.basename(where.split(':')[0])}:{name}" if where else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="Records per Pipeline.process call.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--py-spy", type=int, metavar="TOP", help="Sampling profile with py-spy instead.")
    group.add_argument("--cprofile", type=int, metavar="TOP", help="cProfile instead.")
    group.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # what --py-spy profiles
    args = parser.parse_args()
    if args.plain:
        run(args.samples, args.batch)
    elif args.py_spy:
        py_spy(args.samples, args.batch, args.py_spy)
    elif args.cprofile:
        cprofile(args.samples, args.batch, args.cprofile)
    else:
        stage_table(args.samples, args.batch)


if __name__ == "__main__":
    main()
