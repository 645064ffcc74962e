"""``bench/performance.py`` (``make bench``) checks its arguments before it starts anything long."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "performance.py"), *args], capture_output=True,
                          text=True, timeout=60)


def test_unknown_steps_are_refused():
    done = run("--skip", "throughput,warp-drive")
    assert done.returncode == 2 and "warp-drive" in done.stderr


def test_latency_without_a_throughput_to_base_its_rates_on_is_refused():
    done = run("--skip", "throughput,sweep,backfill,memory")
    assert done.returncode == 2 and "--max-rate" in done.stderr


def test_skipping_every_step_runs_nothing():
    done = run("--skip", "throughput,latency,sweep,embedding-batch,backfill,memory")
    assert done.returncode == 0 and "$" not in done.stdout
