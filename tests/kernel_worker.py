"""Judges a stream in a child process, where ``OPENBLAS_CORETYPE`` can pick another BLAS kernel family.

OpenBLAS reads ``OPENBLAS_CORETYPE`` once, at load, so a test that needs another kernel runs this:

    python tests/kernel_worker.py first CHECKPOINT   # judge part, save a checkpoint, judge the rest
    python tests/kernel_worker.py replay CHECKPOINT  # restore the checkpoint, judge the rest, cut otherwise

It prints JSON: the BLAS architecture in use and the verdict rows of the part after the checkpoint.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

from threadpoolctl import threadpool_info

from detectors import LabelMonitor
from test_replay_determinism import CONFIG, judge, sequence

SPLIT = 333  # mid learning step: judged but not learned samples are in the checkpoint too


def blas_architecture() -> str:
    return next((lib.get("architecture") or "?" for lib in threadpool_info() if lib["user_api"] == "blas"), "?")


def main(mode: str, checkpoint: Path) -> None:
    vectors, labels, ids = sequence(n=900, dim=384)
    if mode == "first":
        monitor = LabelMonitor.from_config(CONFIG)
        judge(monitor, vectors[:SPLIT], labels[:SPLIT], ids[:SPLIT], cuts=[100, 217])
        checkpoint.write_bytes(pickle.dumps(monitor))
        cuts = list(range(50, 900 - SPLIT, 50))
    else:
        monitor = pickle.loads(checkpoint.read_bytes())
        cuts = [1, 2, 3, 150, 151, 400]  # one-row polls take gemv
    rows = judge(monitor, vectors[SPLIT:], labels[SPLIT:], ids[SPLIT:], cuts=cuts)
    print(json.dumps({"architecture": blas_architecture(), "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
