"""Stream scikit-learn's digits with injected label noise to the labelwatch input topic.

The sample producer of ``deploy/docker-compose.yml``; it runs from the labelwatch image, which
has kafka-python and scikit-learn. Each message is an AnnotatedSample with a precomputed
``embedding`` (the 64 pixel intensities, scaled to [0, 1]) and is keyed by its dataset, so one
dataset stays on one partition. ``metadata.noisy`` records which labels were corrupted, for
checking the review topic by hand; labelwatch never reads it.

    python produce_samples.py --bootstrap-servers localhost:29092 --rate 50 --passes 1

Self-contained on purpose: it imports nothing from labelwatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator


def noisy_digits(noise: float, seed: int, dataset: str = "digits", run: int = 0) -> list[dict]:
    """One pass over the digits as AnnotatedSample dicts, with ``noise`` of the labels changed."""
    import numpy as np
    from sklearn.datasets import load_digits

    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    digits = load_digits()
    features = digits.data / 16.0
    labels = digits.target.copy()
    rng = np.random.default_rng(seed + run)
    flipped = rng.random(len(labels)) < noise
    # A flipped label becomes any *other* digit: shift by 1..9 modulo 10.
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, size=int(flipped.sum()))) % 10
    order = rng.permutation(len(labels))
    return [
        {
            "sample_id": f"{dataset}-{run}-{i}",
            "dataset": dataset,
            "label": str(int(labels[i])),
            "embedding": [round(float(v), 4) for v in features[i]],
            "metadata": {"noisy": bool(flipped[i]), "true_label": str(int(digits.target[i]))},
        }
        for i in order
    ]


def messages(noise: float, seed: int, dataset: str, passes: int) -> Iterator[dict]:
    """``passes`` passes over the digits (0: forever), fresh sample ids and noise on each pass."""
    run = 0
    while passes == 0 or run < passes:
        yield from noisy_digits(noise, seed, dataset, run)
        run += 1


def encode(message: dict) -> tuple[bytes, bytes]:
    """The record key (the dataset) and value (compact JSON) of one message."""
    return message["dataset"].encode(), json.dumps(message, separators=(",", ":")).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default=env("PRODUCER_BOOTSTRAP_SERVERS", "localhost:29092"))
    parser.add_argument("--topic", default=env("PRODUCER_TOPIC", "annotations"))
    parser.add_argument("--dataset", default=env("PRODUCER_DATASET", "digits"))
    parser.add_argument("--noise", type=float, default=float(env("PRODUCER_NOISE", "0.1")),
                        help="Share of labels to corrupt.")
    parser.add_argument("--seed", type=int, default=int(env("PRODUCER_SEED", "0")))
    parser.add_argument("--rate", type=float, default=float(env("PRODUCER_RATE", "50")),
                        help="Messages per second; 0 sends as fast as possible.")
    parser.add_argument("--passes", type=int, default=int(env("PRODUCER_PASSES", "0")),
                        help="Passes over the 1797 digits; 0 streams forever.")
    parser.add_argument("--limit", type=int, default=int(env("PRODUCER_LIMIT", "0")),
                        help="Stop after this many messages; 0 means no limit.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from kafka import KafkaProducer

    args = parse_args(argv)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers.split(","), acks="all", linger_ms=20)
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    sent, started = 0, time.monotonic()
    try:
        for message in messages(args.noise, args.seed, args.dataset, args.passes):
            if args.limit and sent >= args.limit:
                break
            key, value = encode(message)
            producer.send(args.topic, key=key, value=value)
            sent += 1
            if interval:
                time.sleep(max(0.0, started + sent * interval - time.monotonic()))
            if sent % 1000 == 0:
                print(f"produced {sent} samples to {args.topic}", file=sys.stderr, flush=True)
        producer.flush()
    finally:
        producer.close()
    print(f"produced {sent} samples to {args.topic}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
