"""Where each dataset's state stands in the input log, so a replay never teaches a sample twice
and a log that was lost or created again never hides new records."""

from __future__ import annotations

import logging

from consumer.metrics import Metrics
from consumer.state import DatasetState

log = logging.getLogger("consumer.pipeline")


class LogPositions:
    """What the broker says of the input log, and each dataset's saved position in it.

    A record whose position is below the dataset's saved position was judged and learned before
    the checkpoint the state came from, and its outputs were delivered before that checkpoint was
    written: :meth:`unseen` skips it. A saved position is only valid for the log it was taken
    from: it is voided when the topic's id changed (deleted and created again) or the log now
    ends before it (lost).

    A record that came through ``labelwatch embed`` is placed by its origin, the raw record the
    embedder read: an embedder that restarts embeds again what it had not committed, and those
    copies fall below the origin's saved position like any replay. This relies on an embedder's
    outputs landing in the order of its input, which it guarantees (``consumer.embed``).
    """

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.log_ends: dict[tuple[str, int], int] = {}
        self.topic_ids: dict[str, str] = {}
        self._warned: set[str] = set()
        self._consumed: dict[str, set[tuple[str, int]]] = {}  # the partitions each dataset was read from

    def observe(self, log_ends: dict[tuple[str, int], int], topic_ids: dict[str, str]) -> None:
        """Each partition's end offset and each topic's id, as the broker reports them now."""
        self.log_ends.update(log_ends)
        self.topic_ids.update(topic_ids)

    def unseen(self, dataset: str, state: DatasetState, items) -> tuple[list, bool]:
        """The (record, sample) items the state has not judged yet, and whether a position was voided."""
        voided = self._void_stale(dataset, state, items)
        fresh = []
        for record, sample in items:
            source = _position(record)
            if source is not None and source.offset < state.positions.get((source.topic, source.partition), -1):
                self.metrics.samples_replayed.inc()
                continue
            fresh.append((record, sample))
        return fresh, voided

    def advance(self, dataset: str, state: DatasetState, kept) -> None:
        """Move the dataset's positions past the records it just judged."""
        for record, _ in kept:
            source = _position(record)
            if source is not None:
                key = (source.topic, source.partition)
                state.positions[key] = max(state.positions.get(key, 0), source.offset + 1)
                if key[0] in self.topic_ids:
                    state.topic_ids[key[0]] = self.topic_ids[key[0]]
        consumed = self._consumed.setdefault(dataset, set())
        consumed.update((r.source.topic, r.source.partition) for r, _ in kept if r.source is not None)
        if len(consumed) > 1 and dataset not in self._warned:
            self._warned.add(dataset)
            log.warning("dataset %r arrives on %d partitions: key messages by dataset, or the order of its samples "
                        "(and so a replay's verdicts) depends on how partitions interleave", dataset,
                        len(consumed))

    def _void_stale(self, dataset: str, state: DatasetState, items) -> bool:
        """Forget saved positions that belong to another incarnation of the topic, or past the log's end.

        Skipping by such a position would drop new records silently: after a broker lost its log,
        offsets start again at 0, below every position saved before. The learned state is kept.
        """
        voided = False
        for key in {(r.source.topic, r.source.partition) for r, _ in items if r.source is not None and r.origin is None}:
            saved = state.positions.get(key)
            if saved is None:
                continue
            topic_id, known_id = self.topic_ids.get(key[0]), state.topic_ids.get(key[0])
            log_end = self.log_ends.get(key)
            if topic_id and known_id and topic_id != known_id:
                reason = f"the topic was created again (id {known_id} -> {topic_id})"
            elif log_end is not None and log_end < saved:
                reason = f"the log now ends at offset {log_end}, before it (lost or truncated)"
            else:
                continue
            del state.positions[key]
            voided = True
            self.metrics.offset_resets.inc()
            log.warning("dataset %r: the saved offset %d of %s[%d] is void: %s. Its records are judged as new; "
                        "the learned state is kept", dataset, saved, key[0], key[1], reason)
        return voided


def _position(record):
    """Where a record stands for replays: its origin when an embedder forwarded it, else where it was read."""
    return record.origin or record.source
