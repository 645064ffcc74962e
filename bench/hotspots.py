"""Where labelwatch's own time goes on the vector path: per detector step, and a cProfile.

In-process, no Kafka: 384-d vectors (10 Gaussian classes, L2-normalised, 10% label noise, seed 0)
through the default detectors in batches of 500.

    .venv/bin/python bench/hotspots.py                  # ms per 500 samples for each detector step
    .venv/bin/python bench/hotspots.py --cprofile 25    # the whole Pipeline.process, top 25 by own time
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumer.pipeline import InputRecord, Pipeline  # noqa: E402
from consumer.settings import Settings  # noqa: E402
from detectors import Batch, LabelMonitor  # noqa: E402
from schemas import SourcePosition  # noqa: E402


def data(n: int, dim: int = 384, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, dim))
    which = rng.integers(0, 10, n)
    vectors = (centers[which] + rng.normal(scale=0.5, size=(n, dim))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [str(v) for v in np.where(rng.random(n) < 0.1, (which + 1) % 10, which)]
    return vectors, labels, [f"s{i}" for i in range(n)]


def detector_steps(n: int) -> None:
    vectors, labels, ids = data(n)
    monitor = LabelMonitor.from_config(Settings().monitor_config())
    spent: dict[str, float] = {}
    for start in range(0, n, 500):
        batch = Batch(vectors[start:start + 500], labels[start:start + 500], None, ids[start:start + 500])
        for detector in monitor.detectors:
            for step, call in (("score", detector.score_many), ("learn", detector.learn_many)):
                began = time.perf_counter()
                call(batch)
                spent[f"{detector.name}.{step}"] = spent.get(f"{detector.name}.{step}", 0.0) + time.perf_counter() - began
    batches = n / 500
    for name, seconds in spent.items():
        print(f"{name:18s} {seconds / batches * 1000:8.1f} ms per 500 samples")
    print(f"{'all detectors':18s} {sum(spent.values()) / batches * 1000:8.1f} ms per 500 samples "
          f"({n / sum(spent.values()):.0f} samples/s)")


def whole_pipeline(n: int, top: int) -> None:
    vectors, labels, ids = data(n)
    records = [InputRecord(orjson.dumps({"sample_id": ids[i], "label": labels[i],
                                         "embedding": np.round(vectors[i], 6).tolist()}),
                           SourcePosition(topic="in", partition=0, offset=i)) for i in range(n)]
    pipeline = Pipeline(Settings().monitor_config(), None)
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for start in range(0, n, 500):
        pipeline.process(records[start:start + 500])
    profiler.disable()
    print(f"Pipeline.process: {n / (time.perf_counter() - began):.0f} samples/s under cProfile")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--cprofile", type=int, metavar="TOP", help="Profile the whole pipeline instead.")
    args = parser.parse_args()
    if args.cprofile:
        whole_pipeline(args.samples, args.cprofile)
    else:
        detector_steps(args.samples)


if __name__ == "__main__":
    main()
