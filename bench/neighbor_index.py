"""Brute force against the HNSW graph (``--neighbor-search hnsw``): time per query and agreement.

Builds a :class:`~detectors.NeighborIndex` of each kind over the same stored samples, then votes
for fresh queries with both. The samples: Gaussian clusters in 384 dimensions, L2-normalised, as
in ``bench/throughput.py``, 10 labels. Agreement = the share of queries whose vote is the same.

    .venv/bin/python bench/neighbor_index.py                       # 10,000 and 100,000 stored
    .venv/bin/python bench/neighbor_index.py --stored 10000 --queries 500

Needs hnswlib (``pip install 'labelwatch[ann]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors import LabelIndex, NeighborIndex  # noqa: E402
from detectors.threads import one_thread  # noqa: E402


def samples(n: int, seed: int, dim: int = 384, n_labels: int = 10, n_clusters: int = 50):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(size=(n_clusters, dim))
    cluster = rng.integers(0, n_clusters, n)
    x = centers[cluster] + rng.normal(scale=0.8, size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [str(c % n_labels) for c in cluster]
    return x.astype(np.float32), labels, [f"s{seed}-{i}" for i in range(n)]


def measure(n_stored: int, n_queries: int) -> dict:
    vectors, labels, ids = samples(n_stored, seed=1)
    queries, _, query_ids = samples(n_queries, seed=2)
    out = {}
    for search in ("brute", "hnsw"):
        classes = LabelIndex()
        index = NeighborIndex(classes, per_class=n_stored // 10, search=search)
        began = time.perf_counter()
        for start in range(0, n_stored, 10_000):
            index.learn(vectors[start:start + 10_000], classes.encode(labels[start:start + 10_000]),
                        ids[start:start + 10_000])
        with one_thread():
            index.predict_proba(queries[:10], query_ids[:10])  # stacks the matrix, builds the graph
            built = time.perf_counter() - began
            began = time.perf_counter()
            votes = index.predict_proba(queries, query_ids)
            spent = time.perf_counter() - began
        out[search] = {"build_s": built, "ms_per_query": spent / n_queries * 1000, "votes": votes}
    out["agreement"] = float(np.mean(np.all(np.abs(out["hnsw"]["votes"] - out["brute"]["votes"]) < 1e-12, axis=1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", default="10000,100000", help="Comma-separated reservoir sizes.")
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    print("| stored | brute ms/query | hnsw ms/query | speed-up | same vote | hnsw build s (one thread) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.stored.split(",")):
        r = measure(n, args.queries)
        brute, hnsw = r["brute"]["ms_per_query"], r["hnsw"]["ms_per_query"]
        print(f"| {n:,} | {brute:.3f} | {hnsw:.3f} | {brute / hnsw:.1f}× | {r['agreement']:.1%} | "
              f"{r['hnsw']['build_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
