"""Offline audit: the service's pipeline over a JSONL file instead of a Kafka topic."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from consumer.pipeline import InputRecord, Pipeline
from consumer.sinks import FileSink
from schemas import Correction, ReviewEvent


@dataclass
class AuditSummary:
    lines: int = 0
    processed: int = 0
    rejected: int = 0
    flagged: int = 0
    flagged_live: int = 0  # events before the final re-audit: what `labelwatch run` would have sent
    # per dataset, the share of labels estimated wrong at the end, which the flag budgets followed
    estimated_error_rate: dict[str, float | None] = field(default_factory=dict)
    answers_applied: int = 0  # answers (--answers) applied once their flag was sent
    answers_unmatched: int = 0  # answers whose sample was never flagged while streaming: not applied


class Answers:
    """Reviewers' answers read ahead of time (``audit --answers``), handed out once their flag is sent.

    An audit replays what reviewers would do: each answer reaches the pipeline right after the
    batch that sent the review event it answers, as an answer on the corrections topic would
    (sooner than a person could; never before the flag). Answers about samples never flagged
    while streaming are not applied: a reviewer answers flags only.
    """

    def __init__(self, records: list[InputRecord]):
        self.waiting: dict[tuple[str, str], list[InputRecord]] = {}
        self.invalid: list[InputRecord] = []
        for record in records:
            try:
                correction = Correction.model_validate_json(record.value)
            except ValidationError:
                self.invalid.append(record)  # the pipeline turns it into a dead letter that says why
                continue
            self.waiting.setdefault((correction.dataset, correction.sample_id), []).append(record)

    @classmethod
    def read(cls, path: Path) -> Answers:
        with path.open("rb") as stream:
            return cls(list(_records(stream)))

    def due(self, events: list[ReviewEvent]) -> list[InputRecord]:
        """The answers to ``events``, each handed out once."""
        return [record for event in events for record in self.waiting.pop((event.dataset, event.sample_id), [])]

    @property
    def n_waiting(self) -> int:
        return sum(map(len, self.waiting.values()))


def _records(stream: IO[bytes]) -> Iterator[InputRecord]:
    for number, raw in enumerate(stream, start=1):
        value = raw.rstrip(b"\r\n")
        if value.strip():
            yield InputRecord(value=value, line=number)


def _progress(total_bytes: int | None):
    from tqdm import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc="audit",
                disable=not sys.stderr.isatty(), file=sys.stderr)


def audit_file(pipeline: Pipeline, input_path: Path, out: IO[str], rejects: IO[str],
               *, batch_size: int = 500, verdicts: IO[str] | None = None,
               annotators: IO[str] | None = None, answers: Answers | None = None) -> AuditSummary:
    """Judge every line of ``input_path``; write review events to ``out``, bad lines to ``rejects``.

    A bad line never stops the run: it is written to ``rejects`` as a JSON dead letter that names
    its line number. With ``verdicts``, every processed sample's score is written there too. At the
    end of the input a final re-audit runs: samples it flags are written as late events, and with
    ``verdicts`` its last word on every sample it re-scored follows as a late verdict.
    With ``annotators``, the annotator report (worst estimated error rate first) is written there
    as one JSON list. With ``answers``, each is applied right after the batch that flags its sample
    (:class:`Answers`); invalid ones are written to ``rejects``.
    """
    summary = AuditSummary()
    sink = FileSink(out, rejects, verdicts)
    if answers is not None and answers.invalid:
        summary.rejected += _answer(pipeline, sink, answers.invalid)
    size = input_path.stat().st_size if input_path.is_file() else None
    with input_path.open("rb") as stream, _progress(size) as bar:
        records = _records(stream)
        while batch := list(islice(records, batch_size)):
            result = pipeline.process(batch)
            sink.deliver(result)
            summary.lines = batch[-1].line
            summary.processed += result.n_processed
            summary.rejected += len(result.dead_letters)
            summary.flagged += len(result.events)
            if answers is not None and (due := answers.due(result.events)):
                summary.rejected += _answer(pipeline, sink, due)
                summary.answers_applied += len(due)
            bar.update(sum(len(r.value) + 1 for r in batch))
    summary.flagged_live = summary.flagged
    summary.answers_unmatched = answers.n_waiting if answers is not None else 0
    final = pipeline.flush()  # the end of the input: re-audit everything still in the window
    sink.deliver(final)
    summary.flagged += len(final.events)
    summary.estimated_error_rate = {name: monitor.estimated_error_rate()
                                    for name, monitor in sorted(pipeline.monitors.items())}
    if annotators is not None:
        json.dump(pipeline.annotator_report(), annotators, indent=1)
        annotators.write("\n")
    return summary


def _answer(pipeline: Pipeline, sink: FileSink, records: list[InputRecord]) -> int:
    """Apply reviewers' answers; returns how many were invalid (written as dead letters)."""
    result = pipeline.correct(records)
    sink.deliver(result)
    return len(result.dead_letters)
