"""``labelwatch demo``: a real labeled stream with known label noise, through the real service."""

from __future__ import annotations

import contextlib
import threading
import time

import orjson
from kafka import KafkaConsumer, KafkaProducer

from consumer.app import build_service, http_server
from consumer.runtime import Runtime
from consumer.demo.broker import LocalBroker, free_port
from consumer.demo.datasets import corrupted_ids, inject_noise, load, to_messages
from consumer.demo.topics import ensure_topics
from consumer.export import read_topic
from consumer.settings import Settings
from schemas import DeadLetter, ReviewEvent, SampleVerdict

MALFORMED = [
    b"this is not json",
    b'{"sample_id": "no-label", "embedding": [1.0, 2.0]}',
    b'{"sample_id": "x", "label": "3", "embedding": [1.0, "NaN"]}',
]


def run_demo(settings: Settings, *, dataset: str = "digits", noise: float = 0.1, seed: int = 0,
             limit: int | None = None, start_broker: bool = True, review: bool = False, out=print,
             runtime: Runtime | None = None) -> dict:
    """Stream ``dataset`` with ``noise`` label noise through labelwatch; report what it caught.

    With ``review``, once every sample is judged the broker, the service and a review desk keep
    running until Ctrl-C (SIGINT or SIGTERM), so reviewers' answers flow back; the final re-audit
    and the report follow.
    """
    data = load(dataset)
    noisy, corrupted = inject_noise(data.labels, noise, n_classes=len(data.class_names), seed=seed)
    messages = to_messages(data, noisy, order_seed=seed)[:limit]
    truth = corrupted_ids(data, corrupted) & {m["sample_id"] for m in messages}

    with contextlib.ExitStack() as stack:
        if start_broker:
            broker = stack.enter_context(LocalBroker())
            settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
            out(f"started a Tansu broker on {broker.bootstrap_servers}")
        port = settings.metrics_port or free_port()
        settings = settings.model_copy(update={"metrics_port": port, "metrics_host": "127.0.0.1"})
        # verdicts too: the demo waits until every sample has one, and reports over exactly those
        settings = settings.model_copy(update={"verdict_topic": settings.verdict_topic or settings.input_topic + "-verdicts"})
        if review:
            settings = settings.model_copy(update={"corrections_topic": settings.corrections_topic
                                                   or settings.review_topic + "-answers"})
        ensure_topics(settings, [settings.input_topic, settings.review_topic, settings.dlq_topic, settings.verdict_topic,
                                 *([settings.corrections_topic, settings.review_topic + "-leases"] if review else [])])

        producer = KafkaProducer(linger_ms=10, **settings.kafka_config())
        for message in messages:
            producer.send(settings.input_topic, key=message["sample_id"].encode(), value=orjson.dumps(message))
        for bad in MALFORMED:
            producer.send(settings.input_topic, value=bad)
        producer.flush()
        producer.close()
        total = len(messages) + len(MALFORMED)
        out(f"produced {len(messages)} samples of '{dataset}' ({len(truth)} labels corrupted, "
            f"{noise:.0%} noise, seed {seed}) and {len(MALFORMED)} malformed messages")

        # on stop, the stream is over: the service re-audits the whole window, as `labelwatch audit`
        # does at end of input, and delivers it like any batch (routed, budgeted, retried)
        app = build_service(settings, flush_on_stop=True, runtime=runtime)
        stack.enter_context(http_server(app))
        out(f"metrics: http://127.0.0.1:{port}/metrics")
        pipeline, service = app.pipeline, app.service
        thread = threading.Thread(target=service.run, name="labelwatch", daemon=True)
        started = time.perf_counter()
        thread.start()
        try:
            judged, letters = _await_outcomes(settings, {m["sample_id"] for m in messages}, len(MALFORMED), thread)
            if review and thread.is_alive():
                _review_until_stopped(settings, out)
        finally:
            service.stop()  # the service closes its clients before the broker goes away
            thread.join()
        elapsed = time.perf_counter() - started
        if len(judged) < len(messages) or len(letters) < len(MALFORMED):
            raise DemoIncomplete(f"the service stopped after judging {len(judged)} of {len(messages)} samples and "
                                 f"dead-lettering {len(letters)} of {len(MALFORMED)} malformed messages")
        final = service.final
        if final is None:
            raise DemoIncomplete("the service stopped before it delivered its final re-audit")
        events = [ReviewEvent.model_validate_json(r.value) for r in
                  read_topic(settings.kafka_config(), settings.review_topic, service.stats.review_events)]

    out(f"judged all {len(judged)} samples in {elapsed:.1f}s ({len(judged) / max(elapsed, 1e-9):.0f}/s); detectors {settings.detectors}, "
        f"voters {settings.voters}, policy {settings.policy}")

    def report(stage: str, flagged: set[str]) -> tuple[float, float, float]:
        caught = flagged & truth
        precision = len(caught) / len(flagged) if flagged else 0.0
        recall = len(caught) / len(truth) if truth else 0.0
        f1 = 2 * precision * recall / (precision + recall) if caught else 0.0
        out(f"{stage}: flagged {len(flagged)} ({len(flagged) / max(len(messages), 1):.1%} of the stream), "
            f"{len(caught)} really corrupted -> precision {precision:.2f}  recall {recall:.2f}  F1 {f1:.2f}")
        return precision, recall, f1

    live = {e.sample_id for e in events if e.sample_id not in {f.sample_id for f in final.events}}
    report("while streaming (first verdicts + re-audits)", live)
    out("  (first verdicts are cautious: a flag sent to a reviewer cannot be taken back; re-audits add more "
        "as evidence grows)")
    flagged = {e.sample_id for e in events}
    precision, recall, f1 = report("after the final re-audit   ", flagged)
    out("examples of review events:")
    for event in sorted(events, key=lambda e: -e.score)[:5]:
        verdict = "corrupted" if event.sample_id in truth else "clean (false alarm)"
        detectors = ", ".join(r.detector for r in event.reasons) + (" (late)" if event.late else "")
        out(f"  {event.sample_id:<16} label {event.label!r:<6} suggested {event.suggested_label!r:<6} "
            f"score {event.score:.2f} by {detectors:<24} truly {verdict}")
    out(f"dead-lettered {len(letters)} malformed messages:")
    for letter in letters:
        out(f"  {letter.error_type}: {letter.reason}")
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": len(flagged),
            "corrupted": len(truth), "dead_letters": len(letters), "judged": len(judged)}


def _review_until_stopped(settings: Settings, out) -> None:
    """Serve a review desk on the demo's topics until SIGINT or SIGTERM."""
    import secrets

    from consumer.desk.app import start_desk
    from consumer.desk.reviewers import Reviewers
    from consumer.desk.settings import DeskSettings
    from consumer.health import wait_for_signal

    token = secrets.token_hex(12)
    desk_settings = DeskSettings(
        bootstrap_servers=settings.bootstrap_servers, review_topic=settings.review_topic,
        corrections_topic=settings.corrections_topic, leases_topic=settings.review_topic + "-leases",
        input_topic=settings.input_topic, http_host="127.0.0.1", http_port=free_port())
    desk = start_desk(desk_settings, Reviewers({"demo": token}))
    try:
        out(f"review desk: {desk.url}  (sign in with the token {token}; keys: c confirm, f false alarm, "
            "s skip, 1-9 relabel)")
        out("  answers flow back to labelwatch run: see them in the desk's progress table and at "
            f"http://127.0.0.1:{settings.metrics_port}/metrics (labelwatch_reviewer_confirmed_precision)")
        out("press Ctrl-C to stop: the final re-audit and the report follow")
        wait_for_signal()
    finally:
        desk.close()


class DemoIncomplete(RuntimeError):
    """The service stopped before every produced message had a verdict or a dead letter."""


def _await_outcomes(settings: Settings, sample_ids: set[str], n_malformed: int, service: threading.Thread,
                    stall_s: float = 300.0) -> tuple[set[str], list[DeadLetter]]:
    """Read the verdict and dead-letter topics until every sample has a verdict and every malformed
    message a dead letter; returns the ids judged and the letters.

    Counting distinct ids, not records consumed: a replayed record must not count twice. Gives up
    when the service thread ends, or when nothing new arrives for ``stall_s``.
    """
    consumer = KafkaConsumer(settings.verdict_topic, settings.dlq_topic, auto_offset_reset="earliest",
                             enable_auto_commit=False, **settings.kafka_config())
    judged: set[str] = set()
    letters: dict[tuple[int, int], DeadLetter] = {}
    last_progress = time.monotonic()
    with contextlib.closing(consumer):
        while len(judged) < len(sample_ids) or len(letters) < n_malformed:
            if not service.is_alive() or time.monotonic() - last_progress > stall_s:
                break
            before = len(judged) + len(letters)
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.topic == settings.verdict_topic:
                        judged.add(SampleVerdict.model_validate_json(record.value).sample_id)
                    else:
                        letter = DeadLetter.model_validate_json(record.value)
                        where = (letter.source.partition, letter.source.offset) if letter.source else (-1, len(letters))
                        letters[where] = letter
            if len(judged) + len(letters) > before:
                last_progress = time.monotonic()
    return judged & sample_ids, list(letters.values())
