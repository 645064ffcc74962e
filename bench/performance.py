"""Every performance benchmark, in one command, each writing its section of ``docs/benchmarks.md``.

In order, on an otherwise idle machine (about an hour on 2 cores):

1. ``throughput.py``: vector and text paths against their baselines, and the cluster-only shell;
2. ``latency.py``: produce-to-verdict latency at 25%, 37.5% and 50% of the vector path's steady
   throughput just measured in 1;
3. ``throughput.py --sweep-poll-records``: throughput against poll size, and its plot;
4. ``embedding_batch.py``: the bare model's texts/s by batch size and texts per call;
5. ``backfill.py``: ``labelwatch audit`` against cleanlab batch on 100k vectors;
6. ``memory.py``: RSS over a stream of 1M samples, against the RSS after 100k.

    .venv/bin/python bench/performance.py            # or: make bench
    .venv/bin/python bench/performance.py --skip memory,backfill
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
STEPS = ("throughput", "latency", "sweep", "embedding-batch", "backfill", "memory")


def run(script: str, *args: str) -> None:
    command = [sys.executable, str(BENCH / script), *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", type=lambda v: {x.strip() for x in v.split(",") if x.strip()}, default=set(),
                        help=f"Steps to leave out, comma-separated: {', '.join(STEPS)}.")
    parser.add_argument("--max-rate", type=float, help="Vector throughput to base the latency rates on, when "
                                                       "throughput is skipped.")
    args = parser.parse_args(argv)
    unknown = args.skip - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}")
    max_rate = args.max_rate
    if "throughput" not in args.skip:
        with tempfile.TemporaryDirectory() as folder:
            rows = Path(folder) / "throughput.json"
            run("throughput.py", "--json-out", str(rows))
            max_rate = json.loads(rows.read_text())[0]["service_steady"]
    if "latency" not in args.skip:
        if not max_rate:
            parser.error("latency needs --max-rate when throughput is skipped")
        rates = ",".join(str(round(max_rate * share)) for share in (0.25, 0.375, 0.5))
        run("latency.py", "--rates", rates, "--max-rate", str(round(max_rate)), "--seconds", "40")
    if "sweep" not in args.skip:
        run("throughput.py", "--sweep-poll-records", "100,250,500,1000,2000")
    if "embedding-batch" not in args.skip:
        run("embedding_batch.py")
    if "backfill" not in args.skip:
        run("backfill.py")
    if "memory" not in args.skip:
        run("memory.py", "--n-total", "1000000", "--checkpoints", "100000,200000,500000,1000000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
