"""What `labelwatch run` flags while a small labelling project streams in (issue 27's question).

Builds each stream as JSONL, runs ``labelwatch audit`` on it with the default settings and
splits its events into those sent while streaming (what a running service sends) and the final
re-audit's, scoring both against the labels the noise changed:

- ``reviews``: the first N fine-food reviews of the demo kit (classes ``great``/``other``, which
  overlap), in the order of ``numpy.random.default_rng(0).permutation``;
- ``two_sources``: fine-food reviews and tweets shuffled together, classes ``review``/``tweet``
  (two plainly different kinds of text, like spam and ham).

Noise: ``consumer.demo.datasets.inject_noise(labels, NOISE, seed=0)``.

    .venv/bin/python bench/live_flags.py --n 800 --noise 0.15
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from consumer.demo.datasets import inject_noise, load  # noqa: E402


def reviews(n: int):
    data = load("reviews")
    rows = np.random.default_rng(0).permutation(len(data))[:n]
    return [data.texts[i] for i in rows], data.labels[rows], data.class_names


def two_sources(n: int):
    reviews, tweets = load("reviews"), load("tweets")
    rng = np.random.default_rng(0)
    texts = [reviews.texts[i] for i in rng.permutation(len(reviews.texts))[:n]] + \
            [tweets.texts[i] for i in rng.permutation(len(tweets.texts))[:n]]
    order = rng.permutation(2 * n)[:n]
    return [texts[i] for i in order], (order >= n).astype(np.int64), ["review", "tweet"]


STREAMS = {"reviews": reviews, "two_sources": two_sources}


def measure(name: str, n: int, noise: float, flags: list[str], workdir: Path) -> dict:
    texts, labels, classes = STREAMS[name](n)
    noisy, corrupted = inject_noise(labels, noise, n_classes=len(classes), seed=0)
    source, events, counts = workdir / f"{name}.jsonl", workdir / f"{name}-events.jsonl", workdir / f"{name}.json"
    source.write_text("".join(json.dumps({"sample_id": str(i), "label": classes[y], "text": t, "dataset": name}) + "\n"
                              for i, (t, y) in enumerate(zip(texts, noisy))))
    subprocess.run([sys.executable, "-m", "consumer", "audit", str(source), "--out", str(events),
                    "--summary-out", str(counts), *flags], capture_output=True, text=True, check=True)
    live = json.loads(counts.read_text())["flagged_live"]  # events are written live ones first
    ids = [int(json.loads(line)["sample_id"]) for line in events.read_text().splitlines()]
    parts = {"live": ids[:live], "final re-audit": ids[live:]}
    return {"stream": name, "n": n, "wrong labels": int(corrupted.sum()),
            **{f"{part} flags": len(flagged) for part, flagged in parts.items()},
            **{f"{part} precision": round(float(corrupted[flagged].mean()), 3) if flagged else None
               for part, flagged in parts.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--audit-args", default="", help="Extra flags for labelwatch audit, as one string.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        rows = [measure(name, args.n, args.noise, args.audit_args.split(), Path(workdir))
                for name in args.streams.split(",")]
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join("—" if v is None else str(v) for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
