"""The least the default judging core can cost on this machine, and the throughput that leaves.

Two pieces of the default detectors' work cannot shrink without changing what they decide (the
quality table moved when they were cut: docs/benchmarks.md, "The judging core"):

- **the exact neighbour search's float32 product**: every full search multiplies its queries with
  every stored row (10 labels × ``neighbors_per_class`` rows of 384 numbers on the throughput
  stream); the candidates, the float64 re-ranking and the vote come on top;
- **the cross-fitted LDA's shrinkage choice**: one 384 × 384 eigendecomposition per fold and
  learning step (500 samples).

This measures both alone, each spread over the cores as the detectors spread them
(:mod:`detectors.threads`), counts the full searches per sample on ``bench/throughput.py``'s stream
through the real ``Pipeline`` (the re-audits search some samples again), and prints what they cost
per 500 samples and the ceilings that follow: samples/s with everything else free, and the ratio
to a bare consume + decode of ``--bare-rate`` samples/s (``bench/throughput.py``'s baseline), which
the service pays too.

    .venv/bin/python bench/floors.py --bare-rate 30000
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hotspots import run  # noqa: E402
from bench.throughput import DIMENSION, N_CLASSES  # noqa: E402
from consumer.runtime import Runtime  # noqa: E402
from detectors.config import MonitorConfig  # noqa: E402
from detectors.threads import map_in_parallel, search_in_parallel  # noqa: E402

QUERIES = 500  # a learning step, and the benchmarks' poll


def best_of(function, repeats: int) -> float:
    """The fastest of ``repeats`` calls (after one to warm up), in ms: a floor, not a typical time."""
    function()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return 1000 * min(times)


def search_product_ms(rows: int, repeats: int) -> float:
    """500 unit queries times ``rows`` stored unit rows, float32, in the search's slices on threads."""
    rng = np.random.default_rng(0)
    stored = rng.normal(size=(rows, DIMENSION)).astype(np.float32)
    queries = rng.normal(size=(QUERIES, DIMENSION)).astype(np.float32)
    out = np.empty((QUERIES, rows), dtype=np.float32)

    def product(start: int, stop: int) -> None:
        np.matmul(queries[start:stop], stored.T, out=out[start:stop])

    return best_of(lambda: search_in_parallel(product, QUERIES, 512), repeats)


def shrinkage_ms(folds: int, repeats: int) -> float:
    """``folds`` eigendecompositions of a 384 × 384 correlation matrix, as the shrinkage choice runs them."""
    sample = np.random.default_rng(1).normal(size=(4 * DIMENSION, DIMENSION))
    correlation = np.corrcoef(sample.T)
    return best_of(lambda: map_in_parallel(np.linalg.eigh, [correlation] * folds), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000, help="Stream length for counting the searches.")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bare-rate", type=float, help="Bare consume + decode, samples/s (bench/throughput.py).")
    args = parser.parse_args()
    config = MonitorConfig()
    rows = N_CLASSES * config.neighbors_per_class
    searches: collections.Counter = collections.Counter()
    run(args.samples, QUERIES, searches)
    full_per_sample = searches["full"] / args.samples
    with Runtime():
        product = search_product_ms(rows, args.repeats)
        eigen = shrinkage_ms(config.n_folds, args.repeats)
    floor = full_per_sample * product + eigen
    print(f"per {QUERIES} samples: the search product over {rows:,} stored rows {product:.1f} ms × "
          f"{full_per_sample:.2f} full searches per sample = {full_per_sample * product:.1f} ms; "
          f"the shrinkage choice's {config.n_folds} eigendecompositions {eigen:.1f} ms; "
          f"together {floor:.1f} ms")
    print(f"ceiling with everything else free: {QUERIES / floor * 1000:,.0f} samples/s")
    if args.bare_rate:
        bare = QUERIES / args.bare_rate * 1000
        print(f"with a bare consume + decode of {args.bare_rate:,.0f}/s ({bare:.1f} ms per {QUERIES}): at most "
              f"{QUERIES / (bare + floor) * 1000:,.0f} samples/s, a ratio of at most {bare / (bare + floor):.3f}")


if __name__ == "__main__":
    main()
