"""Latency from produce to verdict and to review event, on the vector path, at a fixed input rate.

A throwaway Tansu broker on loopback; the real ``LabelwatchService`` in a thread (default
detectors, a verdict topic); 384-d vector samples produced at ``--rate`` per second for
``--seconds``. Each latency is the Kafka create-time of labelwatch's output record minus the
create-time of the input record it answers (both stamped by producers on this machine's clock),
so it covers the wait in the topic, the poll, decoding, the detectors, producing and the
acknowledgement. Late (re-audit) outputs are left out: they come later by design. The paced load
comes from a child process, as producers are other processes in production.

    .venv/bin/python bench/latency.py --rates 300,450,620 --max-rate 1240 --seconds 40
    .venv/bin/python bench/latency.py --quick --out /tmp/b.md     # smoke test
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import command_line, load_average, provenance, replace_section  # noqa: E402
from bench.throughput import vector_messages  # noqa: E402
from consumer.demo.broker import LocalBroker  # noqa: E402
from consumer.runtime import Runtime  # noqa: E402
from consumer.app import build_service  # noqa: E402
from consumer.settings import Settings  # noqa: E402
from consumer.demo.topics import ensure_topics
from consumer.export import read_topic  # noqa: E402
from schemas import ReviewEvent, SampleVerdict  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    array = np.asarray(values)
    return {"n": len(values), "p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "p99": float(np.percentile(array, 99)), "max": float(array.max())}


def measure(rate: float, seconds: float, seed: int = 0, **overrides) -> dict:
    n = int(rate * seconds)
    values = vector_messages(n, seed)
    with LocalBroker() as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap_servers, input_topic="lat-in",
                            review_topic="lat-reviews", dlq_topic="lat-dlq", verdict_topic="lat-verdicts",
                            group_id="lat", metrics_port=0, max_poll_interval_ms=10_000, session_timeout_ms=6_000,
                            heartbeat_interval_ms=2_000, embedding_preload=False, **overrides)
        ensure_topics(settings, ["lat-in", "lat-reviews", "lat-dlq", "lat-verdicts"])
        with Runtime() as runtime:  # the process's runtime, as the command line enters it
            service = build_service(settings, embedder=None, runtime=runtime).service
            thread = threading.Thread(target=service.run, daemon=True)
            thread.start()
            if not service.assigned.wait(timeout=60):
                raise TimeoutError("the service never got its partition")
            with tempfile.TemporaryDirectory() as folder:
                # the load comes from another process, as it would in production: it shares the cores, not the GIL
                source = Path(folder) / "values.jsonl"
                source.write_bytes(b"\n".join(values))
                subprocess.run([sys.executable, __file__, "--produce", str(source), "--bootstrap", broker.bootstrap_servers,
                                "--rate", str(rate)], check=True)
            deadline = time.monotonic() + 120
            while service.stats.consumed < n and time.monotonic() < deadline:
                time.sleep(0.1)
            service.stop()
            thread.join(timeout=60)
            config = settings.kafka_config()
            produced_at = {(r.partition, r.offset): r.timestamp for r in read_topic(config, "lat-in", n, timeout=60)}
            verdict_ms, review_ms, timeline = [], [], []
            for record in read_topic(config, "lat-verdicts", n, timeout=60):
                verdict = SampleVerdict.model_validate_json(record.value)
                if not verdict.late and verdict.source:
                    verdict_ms.append(record.timestamp - produced_at[(verdict.source.partition, verdict.source.offset)])
                    timeline.append((produced_at[(verdict.source.partition, verdict.source.offset)], verdict_ms[-1]))
            for record in read_topic(config, "lat-reviews", 1, timeout=10):
                event = ReviewEvent.model_validate_json(record.value)
                if not event.late and event.source:
                    review_ms.append(record.timestamp - produced_at[(event.source.partition, event.source.offset)])
    print(f"service: {service.stats.batches} batches (mean {service.stats.consumed / max(service.stats.batches, 1):.0f} "
          f"records), {service.stats.checkpoints} checkpoints", file=sys.stderr)
    return {"rate": rate, "seconds": seconds, "n": n, "consumed": service.stats.consumed, "timeline": timeline,
            "batches": service.stats.batches,
            "verdict": percentiles([v / 1000 for v in verdict_ms]), "review": percentiles([v / 1000 for v in review_ms])}


def produce_paced(source: Path, bootstrap: str, rate: float) -> None:
    """Send the lines of ``source`` to ``lat-in`` at ``rate`` per second (the load generator's process)."""
    values = source.read_bytes().split(b"\n")
    # linger_ms=5, the Java client's default since Kafka 4.0: records sent within 5 ms share a request.
    # With 0, one request per record cost this pure-Python process about half a core, taken from the
    # two the service is measured on (docs/benchmarks.md, Latency). Create-times are stamped at send().
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=5, acks=1)
    started = time.monotonic()
    for i, value in enumerate(values):  # paced: the i-th record leaves at started + i / rate
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.send("lat-in", key=b"bench-vectors", value=value)
    producer.flush()
    producer.close()


def section(results: list[dict], command: str, load: tuple[float, float], max_rate: float | None) -> str:
    def cells(p: dict) -> str:
        if not p.get("n"):
            return "0 | | | | "
        return f"{p['n']:,} | {p['p50']:.3f} | {p['p95']:.3f} | {p['p99']:.3f} | {p['max']:.3f}"

    def share(rate: float) -> str:
        return f"{rate / max_rate:.0%}" if max_rate else "?"

    rows = []
    for result in results:
        rows.append(f"| {result['rate']:.0f} | {share(result['rate'])} | verdict (every sample) | {cells(result['verdict'])} |")
        rows.append(f"| {result['rate']:.0f} | {share(result['rate'])} | review event (first verdicts) "
                    f"| {cells(result['review'])} |")
    windows = []
    for result in results:
        timeline = sorted(result.get("timeline", []))
        if not timeline:
            continue
        first, by_window = timeline[0][0], {}
        for produced, latency in timeline:
            by_window.setdefault(int((produced - first) // 10_000), []).append(latency / 1000)
        windows.append(f"{result['rate']:.0f}/s: " + ", ".join(
            f"{w * 10}-{w * 10 + 10} s {np.percentile(v, 99):.2f}" for w, v in sorted(by_window.items())))
    verdicts = "; ".join(f"{r['rate']:.0f}/s ({share(r['rate'])} of max): p99 **{r['verdict'].get('p99', float('nan')):.3f} s** "
                         f"({'met' if r['verdict'].get('p99', float('inf')) < 1 else 'NOT met'})" for r in results)
    return "\n".join([
        "## Latency: produce to verdict and to review event (vector path)",
        "",
        *provenance("Tansu broker in memory on loopback, kafka-python", load, command),
        "",
        f"Input: 384-d vectors produced at a fixed rate for {results[0]['seconds']:.0f} s each, one partition, by a "
        "separate process; the real service with default settings and a verdict topic; a fresh broker per rate."
        + (f" Max is the vector path's steady throughput from the Throughput section, {max_rate:,.0f}/s." if max_rate else ""),
        "",
        "| rate (samples/s) | of max | output | n | p50 s | p95 s | p99 s | max s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Verdict p99 by when the input was produced (10-second windows; later samples meet fuller windows "
        "and indexes, so more re-audit work): " + "; ".join(windows) + ".",
        "",
        f"Target: p99 < 1 s at about 50% of max. {verdicts}. Latency = create-time of the output record minus "
        "create-time of the input record; both include the producers' batching; re-audit (late) outputs "
        "are excluded.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300.0, help="Input samples per second.")
    parser.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",") if x.strip()],
                        help="Several rates, one run each (overrides --rate).")
    parser.add_argument("--max-rate", type=float, help="The maximum throughput the rates are shares of (report only).")
    parser.add_argument("--fetch-max-wait-ms", type=int, help="The service's fetch_max_wait_ms (default: the setting's).")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--quick", action="store_true", help="100/s for 5 s: the smoke test.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    parser.add_argument("--produce", type=Path, help=argparse.SUPPRESS)  # internal: be the load generator
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce:
        produce_paced(args.produce, args.bootstrap, args.rate)
        return 0
    rates, seconds = ([100.0], 5.0) if args.quick else (args.rates or [args.rate], args.seconds)
    load_before = load_average()
    overrides = {} if args.fetch_max_wait_ms is None else {"fetch_max_wait_ms": args.fetch_max_wait_ms}
    results = [measure(rate, seconds, **overrides) for rate in rates]
    text = section(results, command_line(), (load_before, load_average()), args.max_rate)
    print(text)
    replace_section(args.out, "latency", text)
    short = [r for r in results if r["consumed"] < r["n"]]
    for r in short:
        print(f"at {r['rate']:.0f}/s the service consumed only {r['consumed']} of {r['n']}", file=sys.stderr)
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
