"""The ``labelwatch`` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from consumer.settings import KafkaConnection, Settings
from detectors import parameters

DETECTOR_FIELDS = ("detectors", "voters", "policy", *parameters(), "reaudit_window", "reaudit_delay", "learning_step",
                   "seed")
"""The settings of the detectors: the monitor's, then every registered detector parameter."""
EMBEDDING_FIELDS = (
    "embedding_model", "embedding_backend", "embedding_batch_size", "embedding_device", "embedding_threads",
    "embedding_cache_dir")
QUICK_GROUP = {"max_poll_interval_ms": 10_000, "session_timeout_ms": 6_000, "heartbeat_interval_ms": 2_000}
"""Consumer-group timings for a single local broker: joins in seconds instead of tens of seconds."""


def _add_settings(parser: argparse.ArgumentParser, names, model=Settings) -> None:
    """One ``--flag`` per setting; unset flags fall back to ``LABELWATCH_*`` and then the default."""
    for name in names:
        field = model.model_fields[name]
        help_text = (field.description or "") + f" [env LABELWATCH_{name.upper()}]"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, help=help_text)


def _settings(args: argparse.Namespace, names, model=Settings):
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    try:
        return model(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise SystemExit(f"labelwatch: invalid settings: {problems}") from None


def _setup_logging(level: str, fmt: str = "text") -> None:
    from consumer.logs import setup_logging

    setup_logging(level, fmt)


def cmd_run(args) -> int:
    from consumer import app

    settings = _settings(args, Settings.model_fields)
    _setup_logging(settings.log_level, settings.log_format)
    return app.run(settings, runtime=args.runtime)


def cmd_embed(args) -> int:
    from consumer.embed.app import run
    from consumer.embed.settings import EmbedSettings

    settings = _settings(args, EmbedSettings.model_fields, EmbedSettings)
    _setup_logging(settings.log_level, settings.log_format)
    return run(settings)


def cmd_review(args) -> int:
    from consumer.desk.app import run
    from consumer.desk.settings import DeskSettings

    settings = _settings(args, DeskSettings.model_fields, DeskSettings)
    _setup_logging(settings.log_level, settings.log_format)
    return run(settings)


def cmd_label_studio(args) -> int:
    from consumer.labelstudio.app import run
    from consumer.labelstudio.settings import BridgeSettings

    settings = _settings(args, BridgeSettings.model_fields, BridgeSettings)
    _setup_logging(settings.log_level, settings.log_format)
    return run(settings)


def cmd_audit(args) -> int:
    from consumer.app import build_pipeline
    from consumer.audit import Answers, audit_file

    settings = _settings(args, DETECTOR_FIELDS + EMBEDDING_FIELDS)
    for path in (args.input, args.answers):
        if path is not None and not path.exists():
            raise SystemExit(f"labelwatch: no such input file: {path}")
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(args.out.open("w", encoding="utf-8"))
        rejects = stack.enter_context(args.rejects.open("w", encoding="utf-8")) if args.rejects else sys.stderr
        verdicts = stack.enter_context(args.verdicts_out.open("w", encoding="utf-8")) if args.verdicts_out else None
        annotators = (stack.enter_context(args.annotators_out.open("w", encoding="utf-8"))
                      if args.annotators_out else None)
        summary = audit_file(build_pipeline(settings, runtime=args.runtime), args.input, out, rejects, batch_size=args.batch_size,
                             verdicts=verdicts, annotators=annotators,
                             answers=Answers.read(args.answers) if args.answers else None)
    print(f"audited {summary.processed} samples from {summary.lines} lines: {summary.flagged} flagged, "
          f"{summary.rejected} rejected ({summary.flagged_live} of the events while streaming, the rest by the "
          "final re-audit)" + (f"; {summary.answers_applied} answers applied, {summary.answers_unmatched} to "
                                 "samples never flagged while streaming" if args.answers else ""), file=sys.stderr)
    if args.summary_out:
        args.summary_out.write_text(json.dumps(dataclasses.asdict(summary)) + "\n", encoding="utf-8")
    return 0


def cmd_demo(args) -> int:
    try:
        from consumer.demo.datasets import DATASETS
        from consumer.demo.run import DemoIncomplete, run_demo
    except ImportError as error:  # the Docker image installs the service alone
        raise SystemExit(f"labelwatch demo needs the demo extra: pip install 'labelwatch[demo]' ({error})") from None
    if args.dataset not in DATASETS:
        raise SystemExit(f"labelwatch demo: unknown dataset {args.dataset!r}; choose from {', '.join(DATASETS)}")

    names = DETECTOR_FIELDS + EMBEDDING_FIELDS + ("bootstrap_servers", "metrics_port")
    defaults = {"input_topic": "labelwatch-demo-annotations", "review_topic": "labelwatch-demo-reviews",
                "dlq_topic": "labelwatch-demo-dlq", "group_id": "labelwatch-demo", "metrics_port": 0,
                **QUICK_GROUP}
    explicit = {name: getattr(args, name) for name in names if hasattr(args, name)}
    try:
        settings = Settings(**{**defaults, **explicit})
    except ValidationError as error:
        raise SystemExit(f"labelwatch: invalid settings: {error}") from None
    _setup_logging("WARNING")
    try:
        run_demo(settings, dataset=args.dataset, noise=args.noise, seed=args.noise_seed, limit=args.limit,
                 start_broker="bootstrap_servers" not in explicit, review=args.review, runtime=args.runtime)
    except DemoIncomplete as error:
        print(f"labelwatch demo: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args) -> int:
    from consumer.app import build_pipeline
    from consumer.evaluate import KINDS, evaluate

    settings = _settings(args, DETECTOR_FIELDS + EMBEDDING_FIELDS)
    if not args.input.exists():
        raise SystemExit(f"labelwatch: no such input file: {args.input}")
    if not 0 < args.noise < 1 or args.kind not in KINDS or args.seeds < 1:
        raise SystemExit("labelwatch evaluate: --noise must be in (0, 1), --kind uniform or pair, --seeds at least 1")
    _setup_logging("WARNING")
    shared = build_pipeline(settings)  # one embedding model for every seed
    evaluate(args.input, lambda: build_pipeline(settings, embedder=shared.embedder), noise=args.noise, kind=args.kind,
             seeds=args.seeds, baseline=not args.no_baseline)
    return 0


def cmd_export(args) -> int:
    from consumer.export import write
    from schemas import ReviewEvent

    if (args.input is None) == (args.topic is None):
        raise SystemExit("labelwatch: export reads either a JSONL file of review events or --topic, not both")
    if args.input is not None:
        if not args.input.exists():
            raise SystemExit(f"labelwatch: no such input file: {args.input}")
        lines = [line for line in args.input.read_bytes().splitlines() if line.strip()]
    else:
        from consumer.export import read_topic

        settings = _settings(args, ("bootstrap_servers",))
        lines = [m.value for m in read_topic(settings.kafka_config(), args.topic, expected=10**9, timeout=args.timeout)]
    events = [ReviewEvent.model_validate_json(line) for line in lines]
    with args.out.open("w", encoding="utf-8") as out:
        n = write(events, out, args.format)
    print(f"exported {n} review items ({len(events)} events read) to {args.out} as {args.format}", file=sys.stderr)
    return 0


def _topic_commands() -> dict:
    """The commands ``labelwatch topics create`` knows, each with its settings model."""
    from consumer.desk.settings import DeskSettings
    from consumer.embed.settings import EmbedSettings
    from consumer.labelstudio.settings import BridgeSettings

    return {"run": Settings, "embed": EmbedSettings, "review": DeskSettings, "label-studio": BridgeSettings}


TOPIC_FIELDS = ("review_routes", "review_budget")
"""Settings besides the ``*_topic`` ones that decide which topics a command writes to."""


def _topic_flags() -> dict:
    """``{field: model}``: the first model of each connection, topic and routing setting."""
    flags = {}
    for model in _topic_commands().values():
        for name in model.model_fields:
            if name.endswith("_topic") or name in TOPIC_FIELDS or name in KafkaConnection.model_fields:
                flags.setdefault(name, model)
    return flags


def cmd_topics(args) -> int:
    from kafka.errors import KafkaError, KafkaTimeoutError

    from consumer.topics import TopicSpec, create_topics, leases_topic, topics_of

    models = _topic_commands()
    chosen = list(dict.fromkeys(c.strip() for c in args.commands.split(",") if c.strip()))
    if not chosen or set(chosen) - set(models):
        raise SystemExit(f"labelwatch topics: --commands takes some of {', '.join(models)}; got {args.commands!r}")
    if args.partitions < 1 or args.replication_factor < 1:
        raise SystemExit("labelwatch topics: --partitions and --replication-factor must be at least 1")
    specs = []
    for command in chosen:
        settings = _settings(args, models[command].model_fields, models[command])
        for name in topics_of(settings):
            internal = command == "review" and name == settings.leases_topic
            specs.append(leases_topic(name, args.replication_factor) if internal
                         else TopicSpec(name, args.partitions, args.replication_factor))
    connection = _settings(args, KafkaConnection.model_fields, KafkaConnection)
    try:
        outcome = create_topics(connection.kafka_config(), specs)
    except KafkaTimeoutError as error:
        raise SystemExit(f"labelwatch topics: no broker answered at {connection.bootstrap_servers} ({error}); "
                         "nothing was created") from None
    except KafkaError as error:
        raise SystemExit(f"labelwatch topics: the cluster refused ({type(error).__name__}: {error})") from None
    for name, what in outcome.items():
        print(f"{what:8} {name}")
    return 0


def cmd_schemas(args) -> int:
    from schemas import json_schemas

    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (args.out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(json_schemas())} schemas to {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelwatch", description="Find mislabeled samples in annotation streams.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="Consume a Kafka topic of annotations and emit review events.")
    _add_settings(run, Settings.model_fields)
    run.set_defaults(handler=cmd_run)

    from consumer.embed.settings import EmbedSettings

    embed = commands.add_parser("embed", help="Embed raw annotations and write them, keyed by dataset, to an internal "
                                              "topic that labelwatch run --input-topic judges; run as many replicas "
                                              "as the text path needs.")
    _add_settings(embed, EmbedSettings.model_fields, EmbedSettings)
    embed.set_defaults(handler=cmd_embed)

    from consumer.desk.settings import DeskSettings

    review = commands.add_parser("review", help="Serve the review desk: a web page (and JSON API) where reviewers "
                                                "work the review queue; answers go to the corrections topic.")
    _add_settings(review, DeskSettings.model_fields, DeskSettings)
    review.set_defaults(handler=cmd_review)

    from consumer.labelstudio.settings import BridgeSettings

    bridge = commands.add_parser("label-studio", help="Bridge a Label Studio instance: annotations in, review tasks "
                                                      "out, reviewers' answers back as Corrections.")
    _add_settings(bridge, BridgeSettings.model_fields, BridgeSettings)
    bridge.set_defaults(handler=cmd_label_studio)

    audit = commands.add_parser("audit", help="Audit a JSONL file of AnnotatedSample lines offline.")
    audit.add_argument("input", type=Path, help="JSONL file, one AnnotatedSample per line.")
    audit.add_argument("--out", type=Path, required=True, help="Where to write ReviewEvents as JSONL.")
    audit.add_argument("--rejects", type=Path, help="Where to write rejected lines (default: stderr).")
    audit.add_argument("--verdicts-out", type=Path, help="Also write every sample's verdict and score as JSONL, then the final re-audit's "
                                                                "(late) verdict on every sample it re-scored.")
    audit.add_argument("--batch-size", type=int, default=500, help="Samples per micro-batch.")
    audit.add_argument("--answers", type=Path,
                       help="Reviewers' answers as JSONL, one Correction per line: each is applied right after the batch "
                            "that flags its sample, as if answered on the corrections topic (answers to samples never "
                            "flagged while streaming are not applied).")
    audit.add_argument("--annotators-out", type=Path,
                       help="Write the annotator report (JSON list, worst estimated error rate first).")
    audit.add_argument("--summary-out", type=Path,
                       help="Also write the counts printed at the end as a JSON object (lines, processed, rejected, "
                            "flagged, flagged_live, each dataset's estimated_error_rate, which the flag budgets followed, "
                            "and answers_applied and answers_unmatched), "
                            "for scripts.")
    _add_settings(audit, DETECTOR_FIELDS + EMBEDDING_FIELDS)
    audit.set_defaults(handler=cmd_audit)

    evaluate = commands.add_parser(
        "evaluate", help="What to expect on your own labelled JSONL: inject label noise with fixed seeds, "
                         "run the pipeline, print precision, recall, F1, review fraction and AUPRC beside cleanlab's.")
    evaluate.add_argument("input", type=Path, help="AnnotatedSample JSON lines whose labels you trust.")
    evaluate.add_argument("--noise", type=float, default=0.1, help="Share of labels to corrupt (default 0.1).")
    evaluate.add_argument("--kind", default="uniform", help="uniform (any other label) or pair (class c to c+1).")
    evaluate.add_argument("--seeds", type=int, default=3, help="Noise seeds 0..N-1, one run each (default 3).")
    evaluate.add_argument("--no-baseline", action="store_true", help="Skip cleanlab's batch reference.")
    _add_settings(evaluate, DETECTOR_FIELDS + EMBEDDING_FIELDS)
    evaluate.set_defaults(handler=cmd_evaluate)

    demo = commands.add_parser("demo", help="Stream a real dataset with known label noise through labelwatch.")
    demo.add_argument("--dataset", default="digits",
                      help="One of the demo kit's datasets (DATASETS in consumer/demo/datasets.py); default digits.")
    demo.add_argument("--noise", type=float, default=0.1, help="Share of labels to corrupt.")
    demo.add_argument("--noise-seed", type=int, default=0, help="Seed of the injected noise.")
    demo.add_argument("--limit", type=int, default=None, help="Stream only the first N samples.")
    demo.add_argument("--review", action="store_true",
                      help="Then keep the broker and service running with a review desk until Ctrl-C, and print its "
                           "URL and sign-in token: answer flags in the browser and watch them flow back.")
    _add_settings(demo, DETECTOR_FIELDS + EMBEDDING_FIELDS + ("bootstrap_servers", "metrics_port"))
    demo.set_defaults(handler=cmd_demo)

    export = commands.add_parser("export", help="Export review events as a review queue (JSONL) or Label Studio tasks.")
    export.add_argument("input", type=Path, nargs="?", help="JSONL of ReviewEvents (e.g. audit --out).")
    export.add_argument("--topic", help="Read the review events from this Kafka topic instead (e.g. the deferred topic).")
    export.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for the topic's records.")
    export.add_argument("--format", choices=("jsonl", "labelstudio"), default="jsonl")
    export.add_argument("--out", type=Path, required=True)
    _add_settings(export, ("bootstrap_servers",))
    export.set_defaults(handler=cmd_export)

    topics = commands.add_parser("topics", help="Create the Kafka topics a set of commands needs.")
    topic_verbs = topics.add_subparsers(dest="verb", required=True)
    create = topic_verbs.add_parser(
        "create", help="Create every topic the chosen commands read or write, with the topic names they would use "
                       "(the same flags and LABELWATCH_* variables); topics that exist are left as they are.")
    create.add_argument("--commands", default="run,review",
                        help="Comma-separated, of run, embed, review, label-studio (default run,review).")
    create.add_argument("--partitions", type=int, default=1, help="Partitions of each topic (the leases topic: 1).")
    create.add_argument("--replication-factor", type=int, default=1, help="Replication factor of each topic.")
    for name, model in _topic_flags().items():
        _add_settings(create, (name,), model)
    create.set_defaults(handler=cmd_topics)

    schemas = commands.add_parser("schemas", help="Write the JSON Schema of every wire message.")
    schemas.add_argument("--out", type=Path, default=Path("schemas/json"))
    schemas.set_defaults(handler=cmd_schemas)
    return parser


LONG_RUNNING = ("run", "embed", "audit", "demo")
"""Commands whose heap is large and long-lived: they run under a :class:`~consumer.runtime.Runtime`."""


def main(argv: list[str] | None = None) -> int:
    from consumer.runtime import Runtime

    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        args.runtime = stack.enter_context(Runtime()) if args.command in LONG_RUNNING else None
        return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
