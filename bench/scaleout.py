"""Text throughput of ``labelwatch embed`` with one replica and with two, each limited to one thread.

A throwaway Tansu broker on loopback; N real texts (fine-food reviews, ``consumer.demo.datasets``)
on a raw topic of 4 partitions, keyed by sample. For each run, R ``labelwatch embed`` processes
(``LABELWATCH_EMBEDDING_THREADS=1``, ``OMP_NUM_THREADS=1``, the default embedding backend) join a
fresh group, load the model and get their partitions (``/readyz`` answers 200); only then are the
texts produced, and the run's time is from the first produce until the N-th embedded sample is
on the internal topic (its broker timestamp). Runs alternate 1, 2, 1, 2, ... so drift in this
machine's speed hits both sides; the median of each side is reported.

    .venv/bin/python bench/scaleout.py                    # 1,000 texts, 3 runs per side
    .venv/bin/python bench/scaleout.py --n 200 --runs 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import command_line, load_average, provenance, replace_section  # noqa: E402
from consumer.demo.broker import LocalBroker, free_port  # noqa: E402
from consumer.demo.datasets import inject_noise, load, to_messages  # noqa: E402
from consumer.embed.settings import EmbedSettings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4


def texts(n: int) -> list[bytes]:
    data = load("reviews")
    noisy, _ = inject_noise(data.labels, 0.1, n_classes=len(data.class_names), seed=0)
    return [orjson.dumps(m) for m in to_messages(data, noisy, dataset="bench-reviews")[:n]]


def start_embedders(bootstrap: str, raw: str, out: str, replicas: int) -> list[tuple[subprocess.Popen, int]]:
    group = f"bench-embed-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "LABELWATCH_EMBEDDING_THREADS": "1", "OMP_NUM_THREADS": "1",
           "LABELWATCH_SESSION_TIMEOUT_MS": "6000", "LABELWATCH_HEARTBEAT_INTERVAL_MS": "2000",
           "LABELWATCH_LOG_LEVEL": "WARNING"}
    started = []
    for _ in range(replicas):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "embed", "--bootstrap-servers", bootstrap, "--input-topic", raw,
             "--output-topic", out, "--dlq-topic", f"{out}-dlq", "--group-id", group, "--metrics-port", str(port)],
            env=env, stdout=tempfile.TemporaryFile(), stderr=subprocess.STDOUT)
        started.append((process, port))
    return started


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def one_run(bootstrap: str, values: list[bytes], replicas: int, timeout: float) -> float:
    """Seconds from the first produce until the last embedded sample landed."""
    suffix = uuid.uuid4().hex[:8]
    raw, out = f"bench-raw-{suffix}", f"bench-embedded-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(raw, PARTITIONS, 1), NewTopic(out, 1, 1), NewTopic(f"{out}-dlq", 1, 1)])
    admin.close()
    embedders = start_embedders(bootstrap, raw, out, replicas)
    try:
        deadline = time.monotonic() + timeout
        # every replica loaded its model and, once all joined, holds partitions
        while not all(ready(port) for _, port in embedders):
            assert all(p.poll() is None for p, _ in embedders), "an embedder died while starting"
            assert time.monotonic() < deadline, "embedders not ready"
            time.sleep(0.5)
        time.sleep(8)  # the group's last rebalance settles (a join moves partitions between ready replicas)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        started_ms = time.time() * 1000
        for i, value in enumerate(values):
            producer.send(raw, key=str(i).encode(), value=value)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(out, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=1000)
        last, seen = 0, 0
        while seen < len(values):
            assert time.monotonic() < deadline, f"only {seen} of {len(values)} embedded"
            for record in consumer:
                seen += 1
                last = max(last, record.timestamp)
        consumer.close()
        return (last - started_ms) / 1000
    finally:
        for process, _ in embedders:
            process.terminate()
        for process, _ in embedders:
            process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="Texts per run.")
    parser.add_argument("--runs", type=int, default=3, help="Runs per side (1 and 2 replicas), alternating.")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    values = texts(args.n)
    load_before = load_average()
    seconds: dict[int, list[float]] = {1: [], 2: []}
    with LocalBroker() as broker:
        for run in range(args.runs):
            for replicas in (1, 2):
                took = one_run(broker.bootstrap_servers, values, replicas, args.timeout)
                seconds[replicas].append(took)
                print(f"run {run + 1}, {replicas} embedder(s): {args.n / took:,.1f} texts/s ({took:.1f} s)", flush=True)
    rate = {r: args.n / statistics.median(s) for r, s in seconds.items()}
    ratio = rate[2] / rate[1]
    runs = {r: ", ".join(f"{args.n / t:,.1f}" for t in s) for r, s in seconds.items()}
    backend = EmbedSettings().embedding_backend
    lines = ["## Scale-out: text throughput with one and two `labelwatch embed` replicas", "",
             *provenance(f"embedding backend `{backend}`, one thread per replica; Tansu broker in memory on loopback",
                         (load_before, load_average()), command_line()),
             "", "| embedders | texts/s (median) | runs (texts/s) |", "|---:|---:|---|",
             f"| 1 | {rate[1]:,.1f} | {runs[1]} |", f"| 2 | {rate[2]:,.1f} | {runs[2]} |", "",
             f"Two replicas against one: **{ratio:.2f}×** (target ≥ 1.7×). {args.n} fine-food reviews per run on "
             f"{PARTITIONS} raw partitions; each run from the first produce to the last embedded sample's broker "
             "timestamp, the replicas already started, loaded and assigned. The broker and the measuring consumer "
             "share the machine's 2 cores with the replicas."]
    print("\n".join(lines))
    if not args.no_write:
        replace_section(args.out, "scaleout", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
