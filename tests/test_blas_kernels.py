"""A checkpoint restored on a CPU whose BLAS picks other kernels replays with the same verdicts.

A dataset's state may move to another node (a rebalance, a restart elsewhere), whose CPU makes
OpenBLAS take another kernel family. The replay there must flag the same samples with the same
suggestions; scores may move within ``SCORE_TOLERANCE`` (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verdicts import assert_same_verdicts

pytestmark = pytest.mark.replay

WORKER = Path(__file__).with_name("kernel_worker.py")
OTHER_KERNELS = ("Prescott", "Sandybridge", "Haswell")  # SSE3, AVX, AVX2: every x86-64 CPU of CI's kind has them


def judged(mode: str, checkpoint: Path, kernel: str | None = None) -> dict:
    env = dict(os.environ)
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    done = subprocess.run([sys.executable, str(WORKER), mode, str(checkpoint)], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    result = json.loads(done.stdout)
    result["rows"] = [tuple(row) for row in result["rows"]]
    return result


def test_a_checkpoint_replays_with_the_same_verdicts_under_other_blas_kernels(tmp_path):
    checkpoint = tmp_path / "monitor.pickle"
    here = judged("first", checkpoint)
    assert sum(row[2] for row in here["rows"]) >= 10, "the stream must produce flags, or equality proves little"
    architectures = set()
    for kernel in OTHER_KERNELS:
        there = judged("replay", checkpoint, kernel)
        architectures.add(there["architecture"])
        assert_same_verdicts(there["rows"], here["rows"])
    assert architectures - {here["architecture"]}, "no other kernel family was tried"
