"""Backfill: ``labelwatch audit`` over a file of precomputed vectors, next to cleanlab in batch.

Both run as child processes on the same JSONL file (384-d vectors, 10 Gaussian classes, 10% label
noise, seed 0), each timed from start to exit, with its peak RSS (``ru_maxrss`` of the child):

- labelwatch: ``labelwatch audit FILE --out EVENTS`` (default detectors, final re-audit included);
- cleanlab: 5-fold out-of-fold ``predict_proba`` of ``StandardScaler + LogisticRegression``, then
  ``cleanlab.filter.find_label_issues``, the baseline of ``bench/quality.py``.

    .venv/bin/python bench/backfill.py                   # 100,000 samples
    .venv/bin/python bench/backfill.py --quick --out /tmp/b.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import command_line, load_average, provenance, replace_section  # noqa: E402
from bench.throughput import vector_messages  # noqa: E402

CLEANLAB = """
import json, sys, numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from cleanlab.filter import find_label_issues
rows = [json.loads(line) for line in open(sys.argv[1])]
x = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
names = sorted({r["label"] for r in rows})
y = np.asarray([names.index(r["label"]) for r in rows])
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
proba = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
issues = find_label_issues(y, proba, n_jobs=1)
print(json.dumps({"flagged": int(issues.sum())}))
"""


def run_child(command: list[str], workdir: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB (this child's own, from ``wait4``), and stdout of one child."""
    out, err = workdir / "child.out", workdir / "child.err"
    began = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env={**os.environ, "OMP_NUM_THREADS": "2"})
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {err.read_text()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 samples: the smoke test.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else args.samples
    load_before = load_average()
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "samples.jsonl"
        source.write_bytes(b"\n".join(vector_messages(n, seed=0)) + b"\n")
        cl_wall, cl_rss, cl_out = run_child([sys.executable, "-c", CLEANLAB, str(source)], Path(work))
        lw_wall, lw_rss, _ = run_child([sys.executable, "-m", "consumer", "audit", str(source),
                                        "--out", str(Path(work) / "events.jsonl")], Path(work))
        events = (Path(work) / "events.jsonl").read_text().splitlines()
    flagged_lw = len({json.loads(line)["sample_id"] for line in events})
    flagged_cl = json.loads(cl_out.strip().splitlines()[-1])["flagged"]
    text = "\n".join([
        "## Backfill: a file of precomputed vectors, labelwatch audit and cleanlab batch",
        "",
        *provenance("labelwatch audit and scikit-learn + cleanlab, each a child process", (load_before, load_average()),
                    command_line()),
        "",
        f"{n:,} samples of 384-d vectors (10 classes, 10% label noise, seed 0) in one JSONL file.",
        "",
        "| | wall s | samples/s | peak RSS (MiB) | flagged |",
        "|---|---:|---:|---:|---:|",
        f"| `labelwatch audit` (streaming, final re-audit) | {lw_wall:.1f} | {n / lw_wall:,.0f} | {lw_rss:,.0f} | {flagged_lw:,} |",
        f"| cleanlab batch (5-fold LogisticRegression + find_label_issues) | {cl_wall:.1f} | {n / cl_wall:,.0f} | {cl_rss:,.0f} | {flagged_cl:,} |",
        "",
        f"Ratio of wall times labelwatch / cleanlab: **{lw_wall / cl_wall:.2f}**. Peak RSS of labelwatch is "
        "bounded by its windows and reservoirs, cleanlab's grows with the file (it holds every vector and "
        "every out-of-fold probability). Peak RSS is each child's own `ru_maxrss` (from `wait4`).",
    ])
    print(text)
    replace_section(args.out, "backfill", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
